//! The archive console at scale: a journal of generated mail (1,000,000 messages by default,
//! the corpus of `benches/archive.rs`, see `handoff::index::corpus`), its index built as
//! `archive reindex` builds it, a real `handoff serve` (this build's binary) with the console on
//! 127.0.0.1, and an HTTP client logged in as an archive administrator that asks for the
//! search page and `/api/search` with the query types of `benches/archive.rs`: a new value each
//! run, and the date range the form requires. Each answer is timed from the request's first
//! byte to the response's last, on one kept-alive connection (as a browser holds it), so a
//! figure includes the session check, the search, the audit record made durable in the journal
//! before the answer, and the page's rendering.
//!
//! Run: `cargo bench --bench console`. Prints the figures and a Markdown table. Knobs:
//!
//! | variable | default | |
//! |---|---|---|
//! | `HANDOFF_CONSOLE_MESSAGES` | 1000000 | messages generated (or, with `JOURNAL`, those the journal holds: read from its `../generated` stamp when there is one) |
//! | `HANDOFF_CONSOLE_JOURNAL` | unset | an existing journal of the corpus (`HANDOFF_ARCHIVE_KEEP=1 cargo bench --bench archive` leaves one): used read-only, the daemon gets a working copy (its segments hard-linked, the last one copied, since the console appends its audit records) |
//! | `HANDOFF_CONSOLE_DIR` | `target/bench-console` | where the working journal, the config and the daemon's files go |
//! | `HANDOFF_CONSOLE_INDEX` | `DIR/index` | where the index is built |
//! | `HANDOFF_CONSOLE_REUSE_INDEX` | unset | `1`: use the index a previous run left there (with `KEEP`), no build |
//! | `HANDOFF_CONSOLE_KEEP` | unset | `1`: keep the working journal and the index |
//! | `HANDOFF_CONSOLE_RUNS` | 100 | runs of each query type, for the page and for the API each |
//! | `HANDOFF_CONSOLE_SEED` | 1 | the corpus |

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper::{Method, Request, StatusCode};

#[path = "common/queries.rs"]
mod queries;

use handoff::index::corpus::{self, Params, Rng};
use handoff::index::{self, Index};
use handoff::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
use handoff::journal::{Body, Entry};
use queries::{KINDS, Kind, ms, percentile, query, text_field};

/// Messages per journal append (one fsync each).
const APPEND: u64 = 1_000;
/// The archive administrator's password (a bench-only user in a bench-only users file).
const PASSWORD: &str = "bench console password";
/// The corpus spans five years from 2021-01-01; a range that holds all of it.
const SINCE: &str = "2021-01-01";
const UNTIL: &str = "2026-12-31";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        total += match m.is_dir() {
            true => du(&e.path()),
            false => m.len(),
        };
    }
    total
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Writes messages `0..n` of `p` into a new journal at `dir`: generated on every core,
/// appended in order through the journal writer.
fn generate(p: &Params, dir: &Path, n: u64) -> Duration {
    let started = Instant::now();
    let (mut w, _) = Writer::open(dir, DEFAULT_SEGMENT_BYTES).unwrap();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let batches = n.div_ceil(APPEND);
    std::thread::scope(|s| {
        let mut rx = Vec::new();
        for k in 0..workers {
            let (tx, r) = mpsc::sync_channel::<Vec<Entry>>(2);
            rx.push(r);
            s.spawn(move || {
                let mut b = k;
                while b < batches {
                    let batch = (b * APPEND..((b + 1) * APPEND).min(n))
                        .map(|i| {
                            let m = corpus::message(p, i);
                            Entry::new(m.kind, &m.meta, Body::Bytes(m.body))
                        })
                        .collect();
                    if tx.send(batch).is_err() {
                        return;
                    }
                    b += workers;
                }
            });
        }
        for b in 0..batches {
            let mut batch = rx[(b % workers) as usize].recv().unwrap();
            w.append(&mut batch).unwrap();
        }
    });
    started.elapsed()
}

/// A working copy of the journal at `from` in `to`, for a daemon that appends to it: every
/// segment but the newest hard-linked (the writer never opens them for writing), the newest
/// copied (the writer appends to it), nothing else (the lock file is the copy's own).
fn working_copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut segments: Vec<String> = std::fs::read_dir(from)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg-") && n.ends_with(".hj"))
        .collect();
    segments.sort();
    let Some((last, sealed)) = segments.split_last() else {
        panic!("{}: no journal segments", from.display());
    };
    for s in sealed {
        std::fs::hard_link(from.join(s), to.join(s)).unwrap_or_else(|e| {
            panic!(
                "hard link {} (the working copy must be on the same file system): {e}",
                s
            )
        });
    }
    std::fs::copy(from.join(last), to.join(last)).unwrap();
}

/// The form's fields of a query type besides the date range, as the values are drawn.
fn band(k: Kind) -> &'static str {
    match k {
        Kind::RareWord => "`text=W`, W of Zipf rank 200,000 to 2,000,000",
        Kind::CommonWord => "`text=W`, W of Zipf rank 0 to 100",
        Kind::Sender => "`from=A`, any of 5,000 accounts",
        Kind::Recipient => "`to=A`, any of 5,000 accounts",
        Kind::AccountMonth => "`account=A`, 30 days",
        Kind::DepartmentWord => "`department=D&sub=on&text=W`, W of rank 1,000 to 10,000",
        Kind::AttachmentWord => "`in_attachment=on&text=W`, W from an attachment",
        Kind::ChineseWord => "`text=W`, a two-character word of a Chinese message",
        Kind::Phrase => "`text=\"A B\"`, two neighbouring words of a message",
    }
}

/// A query of kind `k` on messages `0..n` of `p` (the archive benchmark's draw), as the search
/// form's fields: a phrase in double quotes, a department with its sub-departments, the whole
/// corpus's dates unless the query has a range (the form requires one).
fn form(k: Kind, r: &mut Rng, p: &Params, n: u64) -> Vec<(&'static str, String)> {
    let q = query(k, r, p, n);
    let mut f = Vec::new();
    if !q.text.is_empty() {
        f.push(("text", text_field(&q)));
    }
    if q.parts.attachment && !q.parts.subject && !q.parts.body {
        f.push(("in_attachment", "on".into()));
    }
    for (name, v) in [("from", &q.from), ("to", &q.to), ("account", &q.account)] {
        if let Some(v) = v {
            f.push((name, v.clone()));
        }
    }
    if let Some(d) = &q.department {
        f.push(("department", d.clone()));
        f.push(("sub", "on".into()));
    }
    f.push((
        "since",
        q.since.map_or(SINCE.to_string(), |d| d.to_string()),
    ));
    f.push((
        "until",
        q.until.map_or(UNTIL.to_string(), |d| d.to_string()),
    ));
    f
}

fn query_string(q: &[(&str, String)]) -> String {
    q.iter()
        .map(|(k, v)| format!("{k}={}", handoff::console::html::url_param(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `handoff serve`, stopped (SIGTERM, then waited for) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// An HTTP/1.1 client on one kept-alive connection that holds the console's session cookie.
struct Client {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    cookie: Option<String>,
}

struct Resp {
    status: StatusCode,
    location: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    fn connect(port: u16) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sender = rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        });
        Client {
            rt,
            sender,
            host: format!("127.0.0.1:{port}"),
            cookie: None,
        }
    }

    fn send(&mut self, method: Method, path: &str, form: Option<String>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, format!("handoff_console={c}"));
        }
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .unwrap();
        let sender = &mut self.sender;
        let (parts, body) = self.rt.block_on(async {
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            (parts, body.collect().await.unwrap().to_bytes().to_vec())
        });
        if let Some(set) = parts
            .headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            && let Some(value) = set
                .strip_prefix("handoff_console=")
                .and_then(|v| v.split(';').next())
        {
            self.cookie = (!value.is_empty()).then(|| value.to_string());
        }
        Resp {
            status: parts.status,
            location: parts
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            body,
        }
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(Method::GET, path, None)
    }

    fn login(&mut self, user: &str) {
        let form = self.get("/login");
        assert_eq!(form.status, StatusCode::OK, "{}", form.text());
        let t = form.text();
        let at = t.find("name=\"csrf\" value=\"").expect("a CSRF token") + 19;
        let csrf = t[at..at + 64].to_string();
        let body = format!(
            "csrf={csrf}&user={user}&password={}",
            handoff::console::html::url_param(PASSWORD)
        );
        let r = self.send(Method::POST, "/login", Some(body));
        assert_eq!(
            (r.status, r.location.as_str()),
            (StatusCode::SEE_OTHER, "/"),
            "login: {}",
            r.text()
        );
    }
}

/// The total a search page shows: `<p id="total">N messages</p>`.
fn page_total(t: &str) -> usize {
    let at = t.find("<p id=\"total\">").expect("a result count") + 14;
    t[at..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

struct Row {
    kind: Kind,
    page: [Duration; 3],
    api: [Duration; 3],
    median_hits: usize,
}

/// p50, p99, max of `times` (sorted here).
fn summary(times: &mut [Duration]) -> [Duration; 3] {
    times.sort();
    [
        percentile(times, 0.50),
        percentile(times, 0.99),
        times[times.len() - 1],
    ]
}

fn main() {
    let seed: u64 = env_or("HANDOFF_CONSOLE_SEED", 1);
    let runs: usize = env_or("HANDOFF_CONSOLE_RUNS", 100);
    let keep = flag("HANDOFF_CONSOLE_KEEP");
    let base = std::env::var_os("HANDOFF_CONSOLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-console"));
    let index_dir = std::env::var_os("HANDOFF_CONSOLE_INDEX")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("index"));
    let source = std::env::var_os("HANDOFF_CONSOLE_JOURNAL").map(PathBuf::from);
    // A kept journal says how many messages it holds (`benches/archive.rs` writes the stamp).
    let stamped = source
        .as_ref()
        .and_then(|s| std::fs::read_to_string(s.with_file_name("generated")).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix("messages=")?.parse::<u64>().ok())
        });
    let n: u64 = stamped.unwrap_or_else(|| env_or("HANDOFF_CONSOLE_MESSAGES", 1_000_000));
    let p = Params::realistic(seed);
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    std::fs::create_dir_all(&base).unwrap();
    let journal = base.join("journal");
    println!("console bench: {n} messages, {runs} runs per query type and route, {cores} cores");
    println!("  load before: {}", loadavg());

    let reuse = flag("HANDOFF_CONSOLE_REUSE_INDEX") && index_dir.exists() && journal.exists();
    if !reuse {
        match &source {
            Some(s) => {
                working_copy(s, &journal);
                println!("journal: a working copy of {}", s.display());
            }
            None => {
                let _ = std::fs::remove_dir_all(&journal);
                let took = generate(&p, &journal, n);
                println!(
                    "journal: {n} messages generated and appended in {:.1} s",
                    took.as_secs_f64()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&index_dir);
        let t = Instant::now();
        let index = Index::open_for(&journal, &index_dir).unwrap();
        let mut w = index.rebuild_writer().unwrap();
        let progress = index::catch_up(&journal, &index, &mut w, u64::MAX).unwrap();
        w.finish().unwrap();
        let took = t.elapsed();
        println!(
            "index build: {} records in {:.1} s ({:.0} msg/s), load after it: {}",
            progress.indexed,
            took.as_secs_f64(),
            progress.indexed as f64 / took.as_secs_f64(),
            loadavg()
        );
    } else {
        println!("index: reusing {}", index_dir.display());
    }
    println!(
        "journal {} ({}), index {}",
        gib(du(&journal)),
        journal.display(),
        gib(du(&index_dir))
    );

    // The daemon: its own config, a users file with one archive administrator.
    let port = free_port();
    let config = base.join("handoff.toml");
    let users = base.join("console-users.toml");
    let _ = std::fs::remove_file(&users);
    std::fs::write(
        &config,
        format!(
            "[listen]\nmilter = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n\
             [storage]\njournal = \"{}\"\nindex = \"{}\"\nstate = \"{}\"\n\
             [archive]\nretention_days = 36600\n\
             [console]\nlisten = \"127.0.0.1:{port}\"\nusers = \"{}\"\n",
            free_port(),
            free_port(),
            journal.display(),
            index_dir.display(),
            base.join("state").display(),
            users.display(),
        ),
    )
    .unwrap();
    let handoff = env!("CARGO_BIN_EXE_handoff");
    let mut add = Command::new(handoff)
        .args([
            "console",
            "user",
            "add",
            "bench",
            "--role",
            "archive_admin",
            "--password-stdin",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut add.stdin.take().unwrap(),
        format!("{PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    assert!(add.wait().unwrap().success(), "console user add");
    let log = std::fs::File::create(base.join("serve.log")).unwrap();
    let mut daemon = Daemon(
        Command::new(handoff)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!(
                "handoff serve exited ({status}): see {}",
                base.join("serve.log").display()
            );
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the console listens");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("daemon: listening after {:.1} s", t.elapsed().as_secs_f64());

    let mut c = Client::connect(port);
    c.login("bench");
    // The first search opens the index: timed apart, not in the figures.
    let t = Instant::now();
    let first = c.get(&format!("/api/search?since={SINCE}&until={UNTIL}"));
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let v: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    println!(
        "first search (opens the index): {} ms, {} records",
        ms(t.elapsed()),
        v["total"]
    );

    let mut rows = Vec::new();
    let (mut all_page, mut all_api) = (Vec::new(), Vec::new());
    for kind in KINDS {
        // The page and the API each get their own values.
        let mut r = Rng::new(seed ^ 0xC0_50 ^ kind as u64);
        let mut page_times = Vec::with_capacity(runs);
        let mut api_times = Vec::with_capacity(runs);
        let mut hits = Vec::with_capacity(runs);
        for _ in 0..runs {
            let qs = query_string(&form(kind, &mut r, &p, n));
            let t = Instant::now();
            let resp = c.get(&format!("/search?{qs}"));
            page_times.push(t.elapsed());
            assert_eq!(resp.status, StatusCode::OK, "/search?{qs}: {}", resp.text());
            hits.push(page_total(&resp.text()));

            let qs = query_string(&form(kind, &mut r, &p, n));
            let t = Instant::now();
            let resp = c.get(&format!("/api/search?{qs}"));
            api_times.push(t.elapsed());
            assert_eq!(
                resp.status,
                StatusCode::OK,
                "/api/search?{qs}: {}",
                resp.text()
            );
            let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            hits.push(v["total"].as_u64().unwrap() as usize);
        }
        all_page.extend_from_slice(&page_times);
        all_api.extend_from_slice(&api_times);
        hits.sort();
        let row = Row {
            kind,
            page: summary(&mut page_times),
            api: summary(&mut api_times),
            median_hits: hits[hits.len() / 2],
        };
        println!(
            "{:<18} page p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms | api p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms | median hits {}",
            kind.name(),
            ms(row.page[0]),
            ms(row.page[1]),
            ms(row.page[2]),
            ms(row.api[0]),
            ms(row.api[1]),
            ms(row.api[2]),
            row.median_hits
        );
        rows.push(row);
    }
    let load = loadavg();
    drop(c);
    drop(daemon);
    let page = summary(&mut all_page);
    let api = summary(&mut all_api);

    println!();
    println!(
        "| query ({n} messages; 50 newest and the total) | page p50 | page p99 | API p50 | API p99 | median hits |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {}: {} | {} ms | {} ms | {} ms | {} ms | {} |",
            row.kind.name(),
            band(row.kind),
            ms(row.page[0]),
            ms(row.page[1]),
            ms(row.api[0]),
            ms(row.api[1]),
            row.median_hits
        );
    }
    println!(
        "| all {} requests of each route | {} ms | {} ms | {} ms | {} ms | |",
        all_page.len(),
        ms(page[0]),
        ms(page[1]),
        ms(api[0]),
        ms(api[1])
    );
    println!();
    println!(
        "search page: p50 {} ms, p99 {} ms, max {} ms; /api/search: p50 {} ms, p99 {} ms, max {} ms (goal: p50 at most 100, p99 at most 300)",
        ms(page[0]),
        ms(page[1]),
        ms(page[2]),
        ms(api[0]),
        ms(api[1]),
        ms(api[2])
    );
    println!("  load at the end of the runs: {load}");
    println!("whole bench: {:.0} s", started.elapsed().as_secs_f64());
    if !keep {
        let _ = std::fs::remove_dir_all(&journal);
        let _ = std::fs::remove_dir_all(&index_dir);
    }
}
