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
        // Log in through the form.
        b.goto(&format!("{base}/login")).await.unwrap();
        b.find(Locator::Css("input[name=user]"))
            .await
            .unwrap()
            .send_keys("admin")
            .await
            .unwrap();
        b.find(Locator::Css("input[name=password]"))
            .await
            .unwrap()
            .send_keys(super::console::PASSWORD)
            .await
            .unwrap();
        b.find(Locator::Css("#login")).await.unwrap().click().await.unwrap();
        let summary = b.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
        assert_eq!(summary, "Archive summary", "{}", b.source().await.unwrap());

        // Search: the form, then the result list.
        b.goto(&format!("{base}/search?since=2026-01-01&until=2026-01-31&text=invoice"))
            .await
            .unwrap();
        let total = b.find(Locator::Css("#total")).await.unwrap().text().await.unwrap();
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

        // The message: the subject shown as text, the HTML body's script never ran (it would
        // have set the title), no image request reached the remote server.
        let subject = b.find(Locator::Css("#subject")).await.unwrap().text().await.unwrap();
        assert_eq!(subject, "<script>alert(1)</script>");
        assert_eq!(b.title().await.unwrap(), "Message - handoff archive console");
        let html = b.find(Locator::Css("#html")).await.unwrap().text().await.unwrap();
        assert!(html.contains("hello"), "{html}");
        assert!(b.find_all(Locator::Css("#html script")).await.unwrap().is_empty());
        let names = b.find(Locator::Css("#attachments")).await.unwrap().text().await.unwrap();
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
        b.goto(&format!("{base}/login")).await.unwrap();
        b.find(Locator::Css("input[name=user]"))
            .await
            .unwrap()
            .send_keys("admin")
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
