//! The archive console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, fantoccini). An archive admin logs in through the form, searches, opens a
//! message with an RFC 2047 `<script>` subject, an HTML body with a script and a remote image,
//! and a hostile attachment name: nothing runs and nothing is fetched from the image's server.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};

use crate::console::Console;
use crate::daemon::{free_port, wait_for};

/// chromedriver, killed on drop.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (tests/setup.sh installs chromium-driver)");
        wait_for(Duration::from_secs(10), "chromedriver", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Driver(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Counts connections to the remote image's address: any is a request the page made.
fn pixel_server(port: u16) -> Arc<AtomicUsize> {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            h.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut s) = s {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        }
    });
    hits
}

#[test]
fn browser_admin_logs_in_searches_and_opens_a_hostile_message_inertly() {
    let k = Console::start();
    let pixel_hits = pixel_server(k.pixel);
    // The indexer first (through the API, as admin).
    let mut api = k.login("admin");
    wait_for(Duration::from_secs(20), "the indexer", || {
        let r = api.get("/api/search?since=2026-01-01&until=2026-01-31");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (v["total"] == 4).then_some(())
    });
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", k.port);
    let hostile = k.ids["hostile"].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let b = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
            .expect("a Chromium session");
        // Log in through the form (waiting for the page the click leads to).
        log_in(&b, &base, "admin", "Archive summary").await;

        // Search: the form, then the result list.
        b.goto(&format!("{base}/search?since=2026-01-01&until=2026-01-31&text=invoice"))
            .await
            .unwrap();
        let total = text_at(&b, "#total").await;
        assert_eq!(total, "2 messages");
        b.goto(&format!("{base}/search?since=2026-01-01&until=2026-01-31"))
            .await
            .unwrap();
        let link = b
            .find(Locator::Css(&format!("a[href='/message/{hostile}']")))
            .await
            .unwrap();
        assert_eq!(link.text().await.unwrap(), "<script>alert(1)</script>");
        link.click().await.unwrap();
        wait_url(&b, &format!("/message/{hostile}")).await;

        // The message: the subject shown as text, the HTML body's script never ran (it would
        // have set the title), no image request reached the remote server.
        let subject = text_at(&b, "#subject").await;
        assert_eq!(subject, "<script>alert(1)</script>");
        assert_eq!(b.title().await.unwrap(), "Message - handoff archive console");
        let html = text_at(&b, "#html").await;
        assert!(html.contains("hello"), "{html}");
        assert!(b.find_all(Locator::Css("#html script")).await.unwrap().is_empty());
        let names = text_at(&b, "#attachments").await;
        assert!(names.contains("../\"<b>evil.txt"), "{names}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(pixel_hits.load(Ordering::SeqCst), 0, "the remote image was requested");
        // The counter does see the browser's requests.
        b.goto(&format!("http://127.0.0.1:{}/pixel.gif", k.pixel)).await.unwrap();
        assert!(pixel_hits.load(Ordering::SeqCst) > 0);
        let _ = b.close().await;
    });
    // The browser's actions are in the audit trail.
    let audit = k.audit();
    assert!(
        audit
            .iter()
            .any(|a| a.1 == "console+view" && a.2["id"] == hostile.as_str())
    );
}

// ---- Every search field, the auditor's view, a department scope, a hostile message ----

/// One message of [`varied`]: (key, day of January 2026, sender, recipient, department, raw).
type Mail = (
    &'static str,
    u32,
    &'static str,
    &'static str,
    &'static str,
    String,
);

/// A small corpus where each search field selects something different.
fn varied(pixel: u16) -> Vec<Mail> {
    let plain = |subject: &str, body: &str| {
        format!("From: x@example.net\r\nTo: y@example.net\r\nSubject: {subject}\r\n\r\n{body}\r\n")
    };
    let px = |path: &str| format!("http://127.0.0.1:{pixel}/{path}");
    vec![
        (
            "invoice",
            2,
            "alice@partner.example",
            "carol@corp.example",
            "sales",
            plain("quarterly invoice", "please pay the amount due"),
        ),
        (
            "shipment",
            3,
            "bob@vendor.example",
            "dave@corp.example",
            "sales/emea",
            "From: x@example.net\r\nTo: y@example.net\r\nSubject: shipment notice\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
             the invoice is attached\r\n--B\r\nContent-Type: text/plain\r\n\
             Content-Disposition: attachment; filename=\"report.txt\"\r\n\r\npelican budget figures\r\n--B--\r\n"
                .to_string(),
        ),
        (
            "salary",
            10,
            "alice@partner.example",
            "erin@corp.example",
            "hr",
            plain("salary review", "confidential numbers"),
        ),
        (
            "design",
            20,
            "frank@corp.example",
            "alice@partner.example",
            "engineering",
            plain("design walrus", "walrus architecture notes"),
        ),
        (
            // An RFC 2047 `<script>` subject, an HTML body that tries every way to run a
            // script or reach the network, and hostile attachment names.
            "hostile",
            25,
            "mallory@evil.example",
            "carol@corp.example",
            "sales",
            format!(
                "From: x@example.net\r\nTo: y@example.net\r\nSubject: {HOSTILE_ENCODED}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html\r\n\r\n\
                 <html><head><link rel=\"stylesheet\" href=\"{css}\"><style>body {{ background: url({style}) }}</style></head>\
                 <body><p id=\"inmail\">hello<script>window.pwned = 1; document.title = 'pwned'</script>\
                 <img src=\"{img}\"><img src=\"x\" onerror=\"window.pwned = 2\">\
                 <iframe src=\"{frame}\"></iframe>\
                 <span style=\"background-image: url({inline})\">styled</span>\
                 <a href=\"javascript:window.pwned = 3\">click me</a></p></body></html>\r\n\
                 --XX\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"../\\\"<b>evil.txt\"\r\n\r\nx\r\n\
                 --XX\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=\"{HOSTILE_ENCODED}\"\r\n\r\n\
                 <script>window.pwned = 6</script>\r\n--XX--\r\n",
                css = px("sheet.css"),
                style = px("style.png"),
                img = px("pixel.gif"),
                frame = px("frame.html"),
                inline = px("inline.png"),
            ),
        ),
        (
            "plain-script",
            26,
            "mallory@evil.example",
            "carol@corp.example",
            "sales",
            plain(
                "<script>window.pwned = 4</script>",
                &format!("<script>window.pwned = 5</script><img src=\"{}\">", px("text.gif")),
            ),
        ),
    ]
}

/// RFC 2047 for `<script>window.pwned = 7</script>`.
const HOSTILE_ENCODED: &str = "=?utf-8?b?PHNjcmlwdD53aW5kb3cucHduZWQgPSA3PC9zY3JpcHQ+?=";

/// A console ([`Console`]'s shape) over [`varied`], with users `admin`, `sales` (department
/// sales), `auditor`, and `probe` (an admin that only waits for the indexer, so that the
/// audit records of `admin` are exactly the browser's).
fn varied_console() -> Console {
    let port = free_port();
    let pixel = free_port();
    let policy =
        format!("[console]\nlisten = \"127.0.0.1:{port}\"\nusers = \"console-users.toml\"\n");
    let mut d = crate::daemon::Daemon::prepare(&policy, None, None);
    let (mut w, _) = handoff::journal::writer::Writer::open(
        &d.journal_dir(),
        handoff::journal::writer::DEFAULT_SEGMENT_BYTES,
    )
    .unwrap();
    let mut ids = std::collections::BTreeMap::new();
    for (key, day, from, to, dept, raw) in varied(pixel) {
        let mut meta = crate::support::message_meta(from);
        meta.time = format!("2026-01-{day:02}T10:00:00Z");
        meta.recipients[0].address = to.into();
        meta.recipients[0].deliver = vec![to.into()];
        meta.final_recipients = vec![to.into()];
        meta.accounts = [from, to]
            .into_iter()
            .filter(|a| a.ends_with("@corp.example"))
            .map(str::to_string)
            .collect();
        meta.departments = vec![dept.into()];
        let mut e = [handoff::journal::Entry::new(
            handoff::journal::Kind::Message,
            &meta,
            handoff::journal::Body::Bytes(raw.into_bytes()),
        )];
        ids.insert(key.to_string(), w.append(&mut e).unwrap().0[0].to_string());
    }
    drop(w);
    super::console::add_users(
        &d,
        &[
            ("admin", "archive_admin", None),
            ("sales", "archive_admin", Some("sales")),
            ("auditor", "auditor", None),
            ("probe", "archive_admin", None),
        ],
    );
    d.spawn(&[]);
    wait_for(Duration::from_secs(10), "the console to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let k = Console {
        d,
        port,
        ids,
        pixel,
    };
    let mut probe = k.login("probe");
    wait_for(Duration::from_secs(20), "the indexer", || {
        let r = probe.get("/api/search?since=2026-01-01&until=2026-01-31");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (v["total"] == 6).then_some(())
    });
    k
}

/// A headless Chromium session through `driver`.
async fn chromium(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Logs `user` in through the login form; the page it lands on must have `landing` as title.
async fn log_in(b: &fantoccini::Client, base: &str, user: &str, landing: &str) {
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Css("input[name=user]"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    b.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(super::console::PASSWORD)
        .await
        .unwrap();
    b.find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_h1(b, landing).await;
}

/// Logs out through the header's button.
async fn log_out(b: &fantoccini::Client) {
    b.find(Locator::Css("header form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_h1(b, "Log in").await;
}

async fn h1(b: &fantoccini::Client) -> String {
    text_at(b, "h1").await
}

/// Waits (10 s at most) for the page a click led to: its `h1` is `want`. A click can return
/// before the next page replaced the one clicked on.
async fn wait_h1(b: &fantoccini::Client, want: &str) {
    let started = std::time::Instant::now();
    loop {
        if let Ok(e) = b.find(Locator::Css("h1")).await
            && e.text().await.is_ok_and(|t| t == want)
        {
            return;
        }
        if started.elapsed() > Duration::from_secs(10) {
            panic!(
                "no page titled {want:?}: {}",
                b.source().await.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (10 s at most) until the browser's URL contains `part`.
async fn wait_url(b: &fantoccini::Client, part: &str) {
    let started = std::time::Instant::now();
    while !b.current_url().await.unwrap().as_str().contains(part) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the browser never went to {part:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The HTTP status of the page the browser shows, as the browser received it (Navigation
/// Timing's `responseStatus`).
async fn status(b: &fantoccini::Client) -> u64 {
    let v = b
        .execute(
            "return performance.getEntriesByType('navigation')[0].responseStatus",
            vec![],
        )
        .await
        .unwrap();
    v.as_u64()
        .unwrap_or_else(|| panic!("no responseStatus: {v}"))
}

/// Fills the search form (`fields`: text inputs, `checks`: checkboxes to tick, the dates set
/// as a date picker sets them), submits it, and returns the record ids of the results in the
/// order shown, after checking them against the total the page states.
async fn search_form(
    b: &fantoccini::Client,
    base: &str,
    fields: &[(&str, &str)],
    checks: &[&str],
    (since, until): (&str, &str),
) -> Vec<String> {
    b.goto(&format!("{base}/search")).await.unwrap();
    for (name, value) in fields {
        b.find(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    for name in checks {
        b.find(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    // A date input's typing order depends on the locale; a date picker sets the ISO value.
    b.execute(
        "document.querySelector('input[name=since]').value = arguments[0];\
         document.querySelector('input[name=until]').value = arguments[1];",
        vec![since.into(), until.into()],
    )
    .await
    .unwrap();
    b.find(Locator::Css("#go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The click returns once the browser has the next page; wait for its result list anyway.
    let total = match b.wait().for_element(Locator::Css("#total")).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!("{fields:?} {checks:?}: {e}: {}", b.source().await.unwrap()),
    };
    let mut ids = Vec::new();
    for a in b.find_all(Locator::Css("#hits a")).await.unwrap() {
        let href = a.attr("href").await.unwrap().unwrap();
        ids.push(href.strip_prefix("/message/").unwrap().to_string());
    }
    assert_eq!(
        total,
        format!("{} messages", ids.len()),
        "{fields:?} {checks:?}"
    );
    ids
}

/// A search through the form: text fields, checkboxes, dates, and the ids it finds.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    (&'static str, &'static str),
    Vec<String>,
);

const JAN: (&str, &str) = ("2026-01-01", "2026-01-31");

#[test]
fn browser_admin_searches_by_every_field_and_the_auditor_sees_it_but_cannot_search() {
    let k = varied_console();
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", k.port);
    let id = |key: &str| k.ids[key].clone();
    // Newest first, as the page lists them.
    let ids = |keys: &[&str]| -> Vec<String> {
        let mut v: Vec<(u32, String)> = varied(0)
            .into_iter()
            .filter(|m| keys.contains(&m.0))
            .map(|m| (m.1, id(m.0)))
            .collect();
        v.sort_by_key(|m| std::cmp::Reverse(m.0));
        v.into_iter().map(|x| x.1).collect()
    };
    runtime().block_on(async {
        let b = chromium(&driver).await;
        log_in(&b, &base, "admin", "Archive summary").await;
        let cases: Vec<Case> = vec![
            (
                &[("account", "carol@corp.example")],
                &[],
                JAN,
                ids(&["invoice", "hostile", "plain-script"]),
            ),
            (
                &[("from", "alice@partner.example")],
                &[],
                JAN,
                ids(&["invoice", "salary"]),
            ),
            (&[("to", "dave@corp.example")], &[], JAN, ids(&["shipment"])),
            (
                &[("text", "invoice")],
                &[],
                JAN,
                ids(&["invoice", "shipment"]),
            ),
            (
                &[("text", "invoice")],
                &["in_subject"],
                JAN,
                ids(&["invoice"]),
            ),
            (
                &[("text", "invoice")],
                &["in_body"],
                JAN,
                ids(&["shipment"]),
            ),
            (
                &[("text", "pelican")],
                &["in_attachment"],
                JAN,
                ids(&["shipment"]),
            ),
            (
                &[("text", "pelican")],
                &["in_subject", "in_body"],
                JAN,
                vec![],
            ),
            (
                &[],
                &[],
                ("2026-01-01", "2026-01-05"),
                ids(&["invoice", "shipment"]),
            ),
            (
                &[],
                &[],
                ("2026-01-15", "2026-01-31"),
                ids(&["design", "hostile", "plain-script"]),
            ),
            (
                &[("department", "sales")],
                &[],
                JAN,
                ids(&["invoice", "hostile", "plain-script"]),
            ),
            (
                &[("department", "sales")],
                &["sub"],
                JAN,
                ids(&["invoice", "shipment", "hostile", "plain-script"]),
            ),
            (
                &[("department", "engineering"), ("text", "walrus")],
                &["sub"],
                JAN,
                ids(&["design"]),
            ),
        ];
        let searches = cases.len();
        for (fields, checks, dates, want) in cases {
            let got = search_form(&b, &base, fields, checks, dates).await;
            assert_eq!(got, want, "{fields:?} {checks:?} {dates:?}");
        }
        // The form kept what was asked; a result opens the message.
        assert_eq!(
            b.find(Locator::Css("input[name=department]"))
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .as_deref(),
            Some("engineering")
        );
        b.find(Locator::Css("#hits a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_h1(&b, "Message").await;
        assert_eq!(status(&b).await, 200);
        let subject = text_at(&b, "#subject").await;
        assert_eq!(subject, "design walrus");
        let text = text_at(&b, "#text").await;
        assert!(text.contains("walrus architecture notes"), "{text}");
        let envelope = text_at(&b, "#envelope").await;
        assert!(
            envelope.contains("frank@corp.example") && envelope.contains("engineering"),
            "{envelope}"
        );
        log_out(&b).await;

        // The auditor: the admin's searches and the view, filtered through the form.
        log_in(&b, &base, "auditor", "Audit log").await;
        let filter = |user: &'static str, action: &'static str| {
            let b = &b;
            let base = &base;
            async move {
                b.goto(&format!("{base}/audit")).await.unwrap();
                for (name, value) in [("user", user), ("command", action)] {
                    b.find(Locator::Css(&format!("input[name={name}]")))
                        .await
                        .unwrap()
                        .send_keys(value)
                        .await
                        .unwrap();
                }
                b.find(Locator::Css("form[action='/audit'] button"))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
                wait_url(b, "command=").await;
                let mut rows = Vec::new();
                for tr in b
                    .find_all(Locator::Css("#audit tr"))
                    .await
                    .unwrap()
                    .into_iter()
                    .skip(1)
                {
                    let cells = tr.find_all(Locator::Css("td")).await.unwrap();
                    let mut row = Vec::new();
                    for c in cells {
                        row.push(c.text().await.unwrap());
                    }
                    rows.push(row);
                }
                let count = text_at(b, "#count").await;
                assert_eq!(count, format!("{} records (newest first)", rows.len()));
                rows
            }
        };
        let rows = filter("console:admin", "search").await;
        assert_eq!(rows.len(), searches, "{rows:#?}");
        assert!(
            rows.iter()
                .all(|r| r[1] == "console:admin" && r[2] == "console+search")
        );
        assert!(
            rows.iter().any(|r| r[4].contains("pelican")
                && r[4].contains(r#""parts":{"attachment":true,"body":false,"subject":false}"#)),
            "{rows:#?}"
        );
        assert!(
            rows.iter().any(|r| r[4].contains("dave@corp.example")),
            "{rows:#?}"
        );
        let rows = filter("console:admin", "view").await;
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert!(rows[0][4].contains(&id("design")), "{rows:#?}");
        let rows = filter("console:admin", "login").await;
        assert_eq!(rows.len(), 1, "{rows:#?}");

        // Search and messages are not the auditor's: 403, and each refusal is in the log.
        b.goto(&format!("{base}/search?since=2026-01-01&until=2026-01-31"))
            .await
            .unwrap();
        assert_eq!(
            (status(&b).await, h1(&b).await.as_str()),
            (403, "Forbidden")
        );
        b.goto(&format!("{base}/message/{}", id("salary")))
            .await
            .unwrap();
        assert_eq!(
            (status(&b).await, h1(&b).await.as_str()),
            (403, "Forbidden")
        );
        assert!(!b.source().await.unwrap().contains("salary review"));
        b.goto(&format!("{base}/api/message/{}", id("salary")))
            .await
            .unwrap();
        assert_eq!(status(&b).await, 403);
        assert!(!b.source().await.unwrap().contains("confidential"));
        let rows = filter("console:auditor", "denied").await;
        assert_eq!(rows.len(), 3, "{rows:#?}");
        assert!(
            rows.iter().any(|r| r[4].contains("GET /search")),
            "{rows:#?}"
        );
        assert_eq!(
            rows.iter().filter(|r| r[4].contains(&id("salary"))).count(),
            2,
            "{rows:#?}"
        );
        let _ = b.close().await;
    });
}

#[test]
fn browser_department_admin_never_sees_another_departments_mail() {
    let k = varied_console();
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", k.port);
    let id = |key: &str| k.ids[key].clone();
    let salary = id("salary");
    let mut in_scope: Vec<String> = ["invoice", "shipment", "hostile", "plain-script"]
        .iter()
        .map(|k| id(k))
        .collect();
    in_scope.sort();
    runtime().block_on(async {
        let b = chromium(&driver).await;
        log_in(&b, &base, "sales", "Archive summary").await;
        // Everything in January: only sales and its sub-departments.
        let mut got = search_form(&b, &base, &[], &[], JAN).await;
        got.sort();
        assert_eq!(got, in_scope);
        assert!(b.source().await.unwrap().contains("Your scope: sales"));
        for (fields, checks) in [
            (&[("from", "alice@partner.example")][..], &[][..]),
            (&[("text", "salary")][..], &[][..]),
            (&[("to", "erin@corp.example")][..], &[][..]),
            (&[("account", "frank@corp.example")][..], &[][..]),
        ] {
            let got = search_form(&b, &base, fields, checks, JAN).await;
            assert!(
                !got.contains(&salary) && !got.contains(&id("design")),
                "{fields:?}: {got:?}"
            );
        }
        // Asking for another department through the form: 403.
        b.goto(&format!("{base}/search")).await.unwrap();
        b.find(Locator::Css("input[name=department]"))
            .await
            .unwrap()
            .send_keys("hr")
            .await
            .unwrap();
        b.execute(
            "document.querySelector('input[name=since]').value = '2026-01-01';\
             document.querySelector('input[name=until]').value = '2026-01-31';",
            vec![],
        )
        .await
        .unwrap();
        b.find(Locator::Css("#go"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_h1(&b, "Forbidden").await;
        assert_eq!(
            (status(&b).await, h1(&b).await.as_str()),
            (403, "Forbidden")
        );
        // By id, page and API: 403, nothing of the message shown.
        for path in [
            format!("/message/{salary}"),
            format!("/message/{salary}/eml"),
            format!("/api/message/{salary}"),
            format!("/message/{}", id("design")),
        ] {
            b.goto(&format!("{base}{path}")).await.unwrap();
            assert_eq!(status(&b).await, 403, "{path}");
            let page = b.source().await.unwrap();
            assert!(
                !page.contains("salary review") && !page.contains("walrus"),
                "{path}: {page}"
            );
        }
        // The API's search: the same scope.
        b.goto(&format!(
            "{base}/api/search?since=2026-01-01&until=2026-01-31"
        ))
        .await
        .unwrap();
        assert_eq!(status(&b).await, 200);
        let json = text_at(&b, "body").await;
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut got: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, in_scope, "{v}");
        b.goto(&format!(
            "{base}/api/search?since=2026-01-01&until=2026-01-31&department=hr"
        ))
        .await
        .unwrap();
        assert_eq!(status(&b).await, 403);
        // What is in scope opens.
        b.goto(&format!("{base}/api/message/{}", id("shipment")))
            .await
            .unwrap();
        assert_eq!(status(&b).await, 200);
        assert!(b.source().await.unwrap().contains("shipment notice"));
        let _ = b.close().await;
    });
    // Each refusal audited, with the id asked for.
    let audit = k.audit();
    let denied: Vec<_> = audit
        .iter()
        .filter(|a| a.0 == "console:sales" && a.1 == "console+denied")
        .collect();
    assert_eq!(denied.len(), 6, "{denied:#?}");
    assert_eq!(
        denied
            .iter()
            .filter(|a| a.2.to_string().contains(&salary))
            .count(),
        3,
        "{denied:#?}"
    );
}

#[test]
fn browser_hostile_message_runs_no_script_and_loads_nothing_remote() {
    let k = varied_console();
    let pixel_hits = pixel_server(k.pixel);
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", k.port);
    let (hostile, plain) = (k.ids["hostile"].clone(), k.ids["plain-script"].clone());
    let pixel = format!(":{}/", k.pixel);
    runtime().block_on(async {
        let b = chromium(&driver).await;
        let pwned = async || {
            b.execute("return [typeof window.pwned, document.title]", vec![])
                .await
                .unwrap()
        };
        log_in(&b, &base, "admin", "Archive summary").await;
        // The results list both subjects as text.
        let got = search_form(&b, &base, &[("from", "mallory@evil.example")], &[], JAN).await;
        assert_eq!(got, vec![plain.clone(), hostile.clone()]);
        for (id, subject) in [
            (&hostile, "<script>window.pwned = 7</script>"),
            (&plain, "<script>window.pwned = 4</script>"),
        ] {
            let link = b
                .find(Locator::Css(&format!("a[href='/message/{id}']")))
                .await
                .unwrap();
            assert_eq!(link.text().await.unwrap(), subject);
        }
        assert_eq!(
            pwned().await,
            serde_json::json!(["undefined", "Search - handoff archive console"])
        );

        // The hostile message: subject and names as text, no script ran, nothing fetched.
        b.find(Locator::Css(&format!("a[href='/message/{hostile}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_h1(&b, "Message").await;
        assert_eq!(status(&b).await, 200);
        let subject = text_at(&b, "#subject").await;
        assert_eq!(subject, "<script>window.pwned = 7</script>");
        let html = text_at(&b, "#html").await;
        assert!(html.contains("hello") && html.contains("styled"), "{html}");
        for active in [
            "script",
            "iframe",
            "style",
            "link",
            "img[src]",
            "[onerror]",
            "a[href]",
        ] {
            assert!(
                b.find_all(Locator::Css(&format!("#html {active}")))
                    .await
                    .unwrap()
                    .is_empty(),
                "{active} in the sanitized body: {}",
                b.source().await.unwrap()
            );
        }
        let names = text_at(&b, "#attachments").await;
        assert!(names.contains("../\"<b>evil.txt"), "{names}");
        assert!(
            names.contains("<script>window.pwned = 7</script>"),
            "the RFC 2047 name decoded, as text: {names}"
        );
        assert!(
            b.find_all(Locator::Css("#attachments b, #attachments script"))
                .await
                .unwrap()
                .is_empty()
        );
        // The link that would run a script has no href left: clicking it does nothing.
        let link = b.find(Locator::Css("#html a")).await.unwrap();
        assert_eq!(link.attr("href").await.unwrap(), None);
        link.click().await.unwrap();
        assert_eq!(
            pwned().await,
            serde_json::json!(["undefined", "Message - handoff archive console"])
        );
        // The browser's own record of what the page loaded: nothing from the pixel server.
        let loaded = b
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name)",
                vec![],
            )
            .await
            .unwrap();
        assert!(!loaded.to_string().contains(&pixel), "{loaded}");

        // The plain-text message with markup in its subject and body.
        b.goto(&format!("{base}/message/{plain}")).await.unwrap();
        let subject = text_at(&b, "#subject").await;
        assert_eq!(subject, "<script>window.pwned = 4</script>");
        let text = text_at(&b, "#text").await;
        assert!(
            text.contains("<script>window.pwned = 5</script><img"),
            "{text}"
        );
        assert_eq!(
            pwned().await,
            serde_json::json!(["undefined", "Message - handoff archive console"])
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            pixel_hits.load(Ordering::SeqCst),
            0,
            "a remote URL was requested"
        );
        // The counter does see the browser's requests.
        b.goto(&format!("http://127.0.0.1:{}/pixel.gif", k.pixel))
            .await
            .unwrap();
        assert!(pixel_hits.load(Ordering::SeqCst) > 0);
        let _ = b.close().await;
    });
}

// ---- downloads and exports through the page ----

/// A headless Chromium session that saves downloads in `dir` without asking (Chromium's
/// `download.default_directory` preference: new headless mode downloads like a window would).
async fn browser_saving_to(driver: &Driver, dir: &std::path::Path) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            "prefs": {
                "download.default_directory": dir.to_str().unwrap(),
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
                "safebrowsing.enabled": false,
            },
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session")
}

/// Waits for a finished download (no `.crdownload` left) whose name `wanted` accepts, and
/// removes it from `dir` after reading it.
fn downloaded(dir: &std::path::Path, wanted: impl Fn(&str) -> bool) -> Vec<u8> {
    let path = wait_for(Duration::from_secs(30), "the download", || {
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| n.ends_with(".crdownload")) {
            return None;
        }
        names.into_iter().find(|n| wanted(n)).map(|n| dir.join(n))
    });
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

#[test]
fn browser_downloads_an_eml_and_exports_a_result_set_as_a_checkable_zip() {
    use crate::console::{JANUARY, hit_ids, unzip_export};
    let k = Console::start();
    let mut api = k.login("admin");
    wait_for(Duration::from_secs(20), "the indexer", || {
        (hit_ids(&mut api, JANUARY).len() == 4).then_some(())
    });
    let downloads = tempfile::tempdir().unwrap();
    let dir = downloads.path().to_path_buf();
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", k.port);
    let quarterly = k.ids["quarterly"].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (eml, all, selected) = rt.block_on(async {
        let b = browser_saving_to(&driver, &dir).await;
        log_in(&b, &base, "admin", "Archive summary").await;

        // One message's .eml, from its page's link.
        b.goto(&format!("{base}/message/{quarterly}"))
            .await
            .unwrap();
        b.find(Locator::Css("#eml"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let want = format!("{quarterly}.eml");
        let eml = downloaded(&dir, |n| n == want);

        // Every result of a search: the page's "Export all 4 results" button.
        b.goto(&format!("{base}/search?{JANUARY}")).await.unwrap();
        let button = b.find(Locator::Css("#export-all-go")).await.unwrap();
        assert_eq!(button.text().await.unwrap(), "Export all 4 results");
        button.click().await.unwrap();
        let all = downloaded(&dir, |n| {
            n.starts_with("handoff-export-") && n.ends_with(".zip")
        });

        // Two rows ticked, then "Export selected".
        let boxes = b
            .find_all(Locator::Css("input[type=checkbox][name=id]"))
            .await
            .unwrap();
        assert_eq!(boxes.len(), 4);
        let mut ticked = Vec::new();
        for cb in &boxes[..2] {
            cb.click().await.unwrap();
            ticked.push(cb.attr("value").await.unwrap().unwrap());
        }
        b.find(Locator::Css("#export-selected-go"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let selected = downloaded(&dir, |n| {
            n.starts_with("handoff-export-") && n.ends_with(".zip")
        });
        let _ = b.close().await;
        (eml, all, (ticked, selected))
    });

    // The .eml is byte for byte what `archive export` writes.
    let out = k.d.path("cli-export");
    let (code, _, err) = k.d.cli(&[
        "archive",
        "export",
        "--id",
        &quarterly,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        eml,
        std::fs::read(out.join(format!("{quarterly}.eml"))).unwrap()
    );

    // The zip: every manifest hash checks out (unzip_export), and its ids are the search's.
    let (manifest, files) = unzip_export(&all);
    let ids: std::collections::BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(ids, hit_ids(&mut api, JANUARY));
    assert_eq!(manifest["exported_by"]["user"], "admin");
    assert_eq!(files[&quarterly], eml);
    let (ticked, selected) = selected;
    let (manifest, files) = unzip_export(&selected);
    assert_eq!(files.keys().cloned().collect::<Vec<_>>().len(), 2);
    assert_eq!(manifest["selection"]["ids"], serde_json::json!(ticked));

    let audit = k.audit();
    let exports = audit.iter().filter(|a| a.1 == "console+export").count();
    assert_eq!(exports, 2);
    assert!(
        audit
            .iter()
            .any(|a| a.1 == "console+download" && a.2["id"] == quarterly.as_str())
    );
}

/// The text of the first element `css` selects on the browser's page.
async fn text_at(b: &fantoccini::Client, css: &str) -> String {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
