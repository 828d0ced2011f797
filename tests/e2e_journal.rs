//! The archive journal through a real Postfix: exactly the accepted messages, once each, with
//! their envelopes; search by every field; byte-exact export; a full disk answers 4xx and loses
//! nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use handoff::journal::record::MessageMeta;
use handoff::journal::{Kind, reader};

use crate::daemon::{Daemon, wait_for};
use crate::e2e_milter::milter_lines;
use crate::support::{Delivered, Lab, LabConfig, send};

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[aliases]
"sales@corp.example" = ["alice@corp.example", "keep@corp.example"]

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
department = "Support"

[accounts."keep@corp.example"]
state = "departed"
successor = "boss@corp.example"
department = "Sales"

[accounts."dis@corp.example"]
state = "disabled"

[accounts."frz@corp.example"]
state = "frozen"
"#;

const TIMEOUT: Duration = Duration::from_secs(30);

fn lab_for(d: &Daemon) -> Lab {
    let mut config = LabConfig::default();
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    Lab::start(config)
}

fn plain(subject: &str, body: &str) -> String {
    format!(
        "From: <sender@example.net>\r\nTo: <x@corp.example>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.net>\r\n\r\n{body}\r\n"
    )
}

/// A MIME message with a GB2312 encoded-word subject (你好), a GBK body (合同 = contract) and a
/// text attachment.
fn chinese_mime() -> Vec<u8> {
    let mut m = b"From: <b@example.net>\r\nTo: <gone@corp.example>\r\nSubject: =?GB2312?B?xOO6ww==?= handover\r\nMessage-ID: <mime@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=GBK\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    m.extend_from_slice(&[0xba, 0xcf, 0xcd, 0xac]); // 合同 in GBK
    m.extend_from_slice(b" attached\r\n--b1\r\nContent-Type: text/plain; name=\"inv.txt\"\r\nContent-Disposition: attachment; filename=\"inv.txt\"\r\n\r\ninvoice-4711\r\n--b1--\r\n");
    m
}

fn accepted(t: &crate::support::Transcript) -> bool {
    t.data.as_ref().is_some_and(|r| r.code == 250)
}

/// The message records (meta) in the journal.
fn journaled(dir: &Path) -> Vec<MessageMeta> {
    let mut out = Vec::new();
    reader::for_each_record(dir, |info, _| {
        if info.header.kind == Kind::Message {
            out.push(serde_json::from_slice(&info.meta).unwrap());
        }
        Ok(())
    })
    .unwrap();
    out
}

fn search(d: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["archive", "search", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = d.cli(&all);
    assert_eq!(code, 0, "search {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn subjects(hits: &[serde_json::Value]) -> Vec<String> {
    let mut s: Vec<String> = hits
        .iter()
        .map(|h| h["subject"].as_str().unwrap().to_string())
        .collect();
    s.sort();
    s
}

/// The sink's copy minus what Postfix adds after the milter saw the message: its Received:
/// header (first, possibly folded) and handoff's own X-Handoff-Forwarded.
fn without_mta_headers(data: &[u8]) -> Vec<u8> {
    let text = data;
    let head_end = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let (head, body) = text.split_at(head_end);
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut skipping = false;
    let mut first = true;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let continuation = line.starts_with(b" ") || line.starts_with(b"\t");
        if !continuation {
            skipping = (first && line.starts_with(b"Received:"))
                || line.starts_with(b"X-Handoff-Forwarded:");
            first = false;
        }
        if !skipping {
            lines.push(line);
        }
    }
    let mut out = lines.concat();
    out.extend_from_slice(body);
    out
}

#[test]
fn exactly_the_accepted_messages_are_journaled_searchable_and_exportable() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d);
    let sent = [
        send(
            &lab,
            "a@example.net",
            &["alice@corp.example"],
            plain("quarterly", "the budget is fine"),
        ),
        send(
            &lab,
            "b@example.net",
            &["gone@corp.example", "dis@corp.example"],
            plain("handover", "see you"),
        ),
        send(
            &lab,
            "b@example.net",
            &["gone@corp.example"],
            chinese_mime(),
        ),
        send(
            &lab,
            "c@example.net",
            &["dis@corp.example"],
            plain("refused", "never stored"),
        ),
        send(
            &lab,
            "c@example.net",
            &["frz@corp.example", "sales@corp.example"],
            plain("team", "hello team"),
        ),
    ];
    let ok: Vec<bool> = sent.iter().map(accepted).collect();
    assert_eq!(
        ok,
        [true, true, true, false, true],
        "{}",
        sent.iter().map(|t| t.to_string()).collect::<String>()
    );
    // Postfix delivers the accepted ones: alice; cs; cs; alice+keep+boss.
    let delivered = lab.sink().wait_for(4, TIMEOUT);

    let records = journaled(&d.journal_dir());
    assert_eq!(
        records.len(),
        4,
        "one record per accepted transaction: {records:#?}"
    );
    let mut ids: Vec<&str> = records
        .iter()
        .filter_map(|m| m.message_id.as_deref())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each message once");
    let handover = records
        .iter()
        .find(|m| m.message_id.as_deref() == Some("<handover@example.net>"))
        .unwrap();
    assert_eq!(handover.sender, "b@example.net");
    assert_eq!(handover.recipients.len(), 1);
    assert_eq!(handover.recipients[0].address, "gone@corp.example");
    assert_eq!(handover.recipients[0].rule, "departed");
    assert_eq!(handover.final_recipients, ["cs@corp.example"]);
    assert_eq!(
        handover.refused.len(),
        1,
        "the refused recipient's decision is kept"
    );
    assert!(
        handover.refused[0].reply.starts_with("550 5.2.1"),
        "{:?}",
        handover.refused
    );
    assert!(
        handover.queue_id.is_some(),
        "Postfix's queue id is recorded"
    );
    assert_eq!(handover.client_address.as_deref(), Some("127.0.0.1"));
    let team = records
        .iter()
        .find(|m| m.message_id.as_deref() == Some("<team@example.net>"))
        .unwrap();
    assert_eq!(
        team.final_recipients,
        [
            "alice@corp.example",
            "keep@corp.example",
            "boss@corp.example"
        ]
    );
    assert_eq!(team.refused[0].reply.split(' ').next(), Some("450"));

    let (code, out, err) = d.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok: "), "{out}");

    // Search by every field.
    assert_eq!(search(&d, &[]).len(), 4);
    assert_eq!(
        subjects(&search(&d, &["--from", "b@example.net"])),
        ["handover", "你好 handover"]
    );
    assert_eq!(
        subjects(&search(&d, &["--to", "cs@corp.example"])),
        ["handover", "你好 handover"]
    );
    assert_eq!(
        subjects(&search(&d, &["--to", "boss@corp.example"])),
        ["team"]
    );
    assert_eq!(
        subjects(&search(&d, &["--account", "keep@corp.example"])),
        ["team"]
    );
    assert_eq!(
        subjects(&search(&d, &["--department", "Support"])),
        ["handover", "你好 handover"]
    );
    assert_eq!(subjects(&search(&d, &["--text", "budget"])), ["quarterly"]);
    assert_eq!(
        subjects(&search(&d, &["--text", "合同"])),
        ["你好 handover"],
        "GBK body decoded"
    );
    assert_eq!(
        subjects(&search(&d, &["--text", "你好", "--in", "subject"])),
        ["你好 handover"]
    );
    assert_eq!(
        subjects(&search(
            &d,
            &["--text", "invoice-4711", "--in", "attachment"]
        )),
        ["你好 handover"]
    );
    assert!(search(&d, &["--text", "invoice-4711", "--in", "body"]).is_empty());
    let today = jiff::Zoned::now().date();
    let tomorrow = today.tomorrow().unwrap().to_string();
    let yesterday = today.yesterday().unwrap().to_string();
    assert!(search(&d, &["--since", &tomorrow]).is_empty());
    assert!(search(&d, &["--until", &yesterday]).is_empty());
    assert_eq!(
        search(
            &d,
            &["--since", &today.to_string(), "--until", &today.to_string()]
        )
        .len(),
        4
    );

    // Export is byte-identical to what the next hop received, less Postfix's Received: and
    // handoff's loop marker (both added after the milter saw the message).
    let hit = &search(&d, &["--text", "invoice-4711"])[0];
    let out_dir = tempfile::tempdir().unwrap();
    let id = hit["id"].as_str().unwrap();
    let (code, _, err) = d.cli(&[
        "archive",
        "export",
        "--id",
        id,
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let exported = std::fs::read(out_dir.path().join(format!("{id}.eml"))).unwrap();
    let at_sink: &Delivered = delivered
        .iter()
        .find(|m| m.header("Message-ID").as_deref() == Some("<mime@example.net>"))
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&without_mta_headers(&at_sink.data)),
        String::from_utf8_lossy(&exported)
    );
    assert_eq!(without_mta_headers(&at_sink.data), exported);

    // Every search and the export left an audit record in the chain.
    let mut audits = 0;
    reader::for_each_record(&d.journal_dir(), |info, _| {
        audits += usize::from(info.header.kind == Kind::Audit);
        Ok(())
    })
    .unwrap();
    assert_eq!(audits, 16, "15 searches and 1 export");
    assert_eq!(d.cli(&["archive", "verify"]).0, 0);
}

fn mount_tmpfs(dir: &Path, size: &str) {
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs needs root");
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_answers_4xx_loses_nothing_and_recovers() {
    let fs = tempfile::tempdir().unwrap();
    mount_tmpfs(fs.path(), "640k");
    let _unmount = Unmount(fs.path());
    let journal = fs.path().join("journal");
    let d = Daemon::start_custom(POLICY, None, Some(&journal), &[]);
    let lab = lab_for(&d);
    let body = "x".repeat(60 * 1024);
    let mut answered_ok = Vec::new();
    let mut refused = None;
    for i in 0..40 {
        let subject = format!("fill-{i}");
        let t = send(
            &lab,
            "a@example.net",
            &["alice@corp.example"],
            plain(&subject, &body),
        );
        match t.data.as_ref().map(|r| r.code) {
            Some(250) => answered_ok.push(subject),
            Some(c) if c / 100 == 4 => {
                refused = Some(subject);
                break;
            }
            other => panic!("unexpected DATA reply {other:?}: {t}"),
        }
    }
    let refused = refused.expect("the tmpfs filled up and a message got a 4xx");
    assert!(!answered_ok.is_empty());
    let (status, body_text) = d.http_get("/readyz");
    assert_eq!(
        status, 503,
        "not ready while the journal cannot write: {body_text}"
    );

    // Every 250 is in the journal and at the sink; the 4xx one is at neither.
    let got = lab.sink().wait_for(answered_ok.len(), TIMEOUT);
    let mut at_sink: Vec<String> = got.iter().filter_map(|m| m.header("Subject")).collect();
    at_sink.sort();
    let mut in_journal: Vec<String> = journaled(&journal)
        .iter()
        .map(|m| {
            m.message_id
                .clone()
                .unwrap()
                .trim_matches(['<', '>'])
                .replace("@example.net", "")
        })
        .collect();
    in_journal.sort();
    let mut want = answered_ok.clone();
    want.sort();
    assert_eq!(at_sink, want);
    assert_eq!(in_journal, want);
    assert!(!in_journal.contains(&refused));
    assert!(
        d.log_text().contains("journal write failed"),
        "the error is logged"
    );
    assert!(d.metric("handoff_journal_errors_total").unwrap_or(0.0) >= 1.0);

    // Space comes back: the sender's retry goes through, and the chain is whole.
    let st = Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(fs.path())
        .status()
        .unwrap();
    assert!(st.success());
    let t = send(
        &lab,
        "a@example.net",
        &["alice@corp.example"],
        plain(&refused, &body),
    );
    assert!(accepted(&t), "{t}");
    wait_for(TIMEOUT, "the retried message at the sink", || {
        lab.sink()
            .all()
            .iter()
            .any(|m| m.header("Subject").as_deref() == Some(refused.as_str()))
            .then_some(())
    });
    assert_eq!(d.http_get("/readyz").0, 200);
    let (code, out, err) = d.cli(&["archive", "verify", "--journal", journal.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(journaled(&journal).len(), answered_ok.len() + 1);
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_50_mib_message_is_streamed_not_held_in_memory() {
    // The mail path's memory: the archive indexer, which reads a message whole to index it
    // after it was answered (about twice its size at its peak), is off here.
    let d = Daemon::start(&format!("indexer = false\n{POLICY}"));
    let mut config = LabConfig::default().main_cf_line("message_size_limit = 104857600");
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    let lab = Lab::start(config);
    // Warm up: one small message so that buffers and threads exist before the baseline.
    assert!(accepted(&send(
        &lab,
        "a@example.net",
        &["alice@corp.example"],
        plain("warm", "up")
    )));
    lab.sink().wait_for(1, TIMEOUT);
    let before = peak_rss_kib(d.pid());

    let line = format!("{}\r\n", "0123456789abcdef".repeat(4));
    let body = line.repeat(50 * 1024 * 1024 / line.len() + 1);
    let t = send(
        &lab,
        "a@example.net",
        &["gone@corp.example"],
        plain("big", &body),
    );
    assert!(accepted(&t), "{t}");
    let got = wait_for(
        Duration::from_secs(120),
        "the 50 MiB message at the sink",
        || {
            lab.sink()
                .all()
                .into_iter()
                .find(|m| m.header("Subject").as_deref() == Some("big"))
        },
    );
    assert!(got.data.len() > 50 * 1024 * 1024);
    let after = peak_rss_kib(d.pid());
    let grown = after.saturating_sub(before);
    eprintln!(
        "handoff peak RSS {before} KiB before, {after} KiB after a 50 MiB message (+{grown} KiB)"
    );
    assert!(
        grown < 16 * 1024,
        "handoff grew by {grown} KiB for a 50 MiB message"
    );
    let big = journaled(&d.journal_dir())
        .into_iter()
        .find(|m| m.message_id.as_deref() == Some("<big@example.net>"))
        .unwrap();
    assert!(big.size > 50 * 1024 * 1024, "{}", big.size);
    assert_eq!(d.cli(&["archive", "verify"]).0, 0);
}

#[test]
fn copy_to_sends_every_accepted_message_to_the_external_archive_too() {
    let policy = format!("[archive]\ncopy_to = \"journal@archiver.example.net\"\n{POLICY}");
    let d = Daemon::start(&policy);
    let lab = lab_for(&d);
    assert!(accepted(&send(
        &lab,
        "a@example.net",
        &["gone@corp.example"],
        plain("copied", "x")
    )));
    assert!(accepted(&send(
        &lab,
        "a@example.net",
        &["alice@corp.example", "dis@corp.example"],
        plain("copied2", "y")
    )));
    let want = [
        "alice@corp.example",
        "cs@corp.example",
        "journal@archiver.example.net",
        "journal@archiver.example.net",
    ];
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(TIMEOUT, "both messages and both archive copies", || {
        let mut r: Vec<String> = lab
            .sink()
            .all()
            .iter()
            .flat_map(|m| m.rcpt_to.clone())
            .collect();
        r.sort();
        (r == want).then_some(())
    });
    let records = journaled(&d.journal_dir());
    assert_eq!(records.len(), 2);
    for m in &records {
        assert_eq!(m.copy_to.as_deref(), Some("journal@archiver.example.net"));
        assert!(
            m.final_recipients
                .iter()
                .any(|r| r == "journal@archiver.example.net"),
            "{m:?}"
        );
    }
}
