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
