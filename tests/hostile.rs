//! Slow and hostile clients on handoff's milter and LMTP ports while Postfix sends mail through
//! it: connections that never say anything, clients that write one byte at a time, oversized
//! milter frames, command lines and messages. handoff must keep serving Postfix within its
//! timeouts, and every message Postfix accepted must be journaled and delivered (loss accounting,
//! `loss.rs`: lost must be 0). Each test prints one line of counts, prefixed `hostile:`.
//! Redis going away during auto-replies is `e2e_autoreply::redis_down_and_back_during_auto_replies`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handoff::milter::codec::{Actions, Command, Decoded, Family, FrameDecoder, Protocol, Reply};

use crate::daemon::{Daemon, free_port, wait_for};
use crate::faults::lab_for;
use crate::loss::{
    Account, SENDER, StopOnDrop, journaled_ids, message_between, send_until_accepted,
};
use crate::support::{Lab, LabConfig, SmtpClient};

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
"#;

/// Postfix's milter_command_timeout (30 s): a milter that makes Postfix wait longer than this
/// for an answer is treated as failed. Postfix traffic must stay well inside it.
const MILTER_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Postfix traffic through one lab: senders that each send id'd messages until told to stop,
/// to a plain and a departed (rewritten) recipient in turn, retrying 4xx like an MTA.
struct Traffic<'a> {
    lab: &'a Lab,
    /// The prefix of this traffic's ids.
    name: &'static str,
    accepted: Mutex<Vec<String>>,
    /// The number in the next message's id.
    next: AtomicUsize,
    attempts: AtomicUsize,
    /// The longest time from connecting to Postfix to its 250 for one message, retries included.
    slowest: Mutex<Duration>,
}

impl<'a> Traffic<'a> {
    fn new(lab: &'a Lab, name: &'static str) -> Traffic<'a> {
        Traffic {
            lab,
            name,
            accepted: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
            slowest: Mutex::new(Duration::ZERO),
        }
    }

    fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Runs `senders` sender threads while `work` runs on this thread, then until at least
    /// `min` messages were accepted; returns what `work` returned.
    fn during<R>(&self, senders: usize, min: usize, work: impl FnOnce() -> R) -> R {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..senders {
                s.spawn(|| self.sender(&stop));
            }
            let _stop = StopOnDrop(&stop);
            let result = work();
            wait_for(Duration::from_secs(60), "Postfix traffic", || {
                (self.count() >= min).then_some(())
            });
            result
        })
    }

    fn sender(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let id = format!("{}-{n}", self.name);
            let rcpt = if n.is_multiple_of(2) {
                "alice@corp.example"
            } else {
                "gone@corp.example"
            };
            let started = Instant::now();
            let attempts = send_until_accepted(self.lab, rcpt, &id);
            let took = started.elapsed();
            self.attempts.fetch_add(attempts, Ordering::Relaxed);
            let mut slowest = self.slowest.lock().unwrap();
            *slowest = (*slowest).max(took);
            drop(slowest);
            self.accepted.lock().unwrap().push(id);
            // Steady traffic, not a flood: the load is not what these tests are about.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Adds an id that something other than the senders got accepted (a slow client of
    /// handoff's own LMTP port): it must be journaled and delivered too.
    fn also_accepted(&self, id: String) {
        self.accepted.lock().unwrap().push(id);
    }

    /// Waits for every accepted message at the sink, compares the three sets, prints the counts
    /// with `label` and fails on a loss or on any message that needed a retry.
    fn settle(&self, d: &Daemon, label: &str) -> Account {
        let accepted = self.accepted.lock().unwrap().clone();
        let account = Account::settle(
            self.lab,
            &d.journal_dir(),
            accepted,
            Duration::from_secs(60),
        );
        let attempts = self.attempts.load(Ordering::Relaxed);
        let senders_accepted = account
            .accepted
            .iter()
            .filter(|id| id.starts_with(self.name))
            .count();
        let slowest = *self.slowest.lock().unwrap();
        let deferred = self.lab.log().matches("status=deferred").count();
        account.report(
            &format!("hostile: {label}"),
            &format!(
                ", attempts {attempts}, slowest accept {slowest:.1?}, Postfix deferrals {deferred}"
            ),
        );
        // Nothing was refused or deferred on the way: no 4xx to a sender, no delivery to
        // handoff deferred by Postfix.
        assert_eq!(
            attempts, senders_accepted,
            "{label}: every message accepted first time"
        );
        assert_eq!(
            deferred,
            0,
            "{label}: Postfix deferred deliveries:\n{}",
            self.lab.log()
        );
        assert!(
            slowest < MILTER_COMMAND_TIMEOUT / 3,
            "{label}: a message took {slowest:?}"
        );
        account
    }
}

/// `n` connections that connect and never send anything.
fn open_idle(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect()
}

/// How many of `conns` the peer has closed, and how many of those it told `421 4.3.2` first.
fn closed_by_handoff(conns: &[TcpStream]) -> (usize, usize) {
    let (mut closed, mut with_421) = (0, 0);
    for c in conns {
        c.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let eof = loop {
            match (&*c).read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
                Err(e) => panic!("idle connection: {e}"),
            }
        };
        if eof {
            closed += 1;
            if String::from_utf8_lossy(&got).contains("\r\n421 4.3.2 ") {
                with_421 += 1;
            }
        }
    }
    (closed, with_421)
}

/// Connections that stay silent must not keep Postfix out. The milter cap (1000) plus 500 idle
/// connections, or 500 on the LMTP port (cap 100), are opened first; then Postfix sends its
/// messages. Each Postfix connection takes the slot of the oldest silent one, so every message
/// is accepted at the first try, well inside Postfix's timeouts, and nothing is lost.
mod idle_connections_do_not_starve_postfix {
    use super::*;

    #[test]
    fn milter() {
        let d = Daemon::start(POLICY);
        let lab = lab_for(&d);
        let cap = handoff::milter::server::Limits::default().max_connections;
        let rss_before = d.memory_kib("VmRSS");
        let idle = open_idle(d.milter_port, cap + 500);
        let rss_idle = d.memory_kib("VmRSS");
        let traffic = Traffic::new(&lab, "im");
        traffic.during(4, 40, || ());
        let account = traffic.settle(&d, "idle_connections_do_not_starve_postfix::milter");
        let (closed, _) = closed_by_handoff(&idle);
        eprintln!(
            "hostile: idle milter connections {} (cap {cap}), closed to make room {closed}, \
             still open {}; handoff RSS {rss_before} KiB before, {rss_idle} KiB with them",
            idle.len(),
            idle.len() - closed
        );
        // The 500 over the cap made room for each other, then for Postfix's connections.
        assert!(closed >= 500, "closed {closed}");
        // A connection's buffers start small (measured: about 8 KiB each).
        let growth = rss_idle.saturating_sub(rss_before);
        assert!(
            growth < 16 * 1024,
            "{} idle connections cost {growth} KiB",
            cap
        );
        assert!(account.accepted.len() >= 40);
    }

    #[test]
    fn content_filter() {
        let (d, lab) = crate::scenarios::content_filter_lab(POLICY);
        let cap = handoff::lmtp::server::Limits::default().max_connections;
        let idle = open_idle(d.lmtp_port.unwrap(), 500);
        let traffic = Traffic::new(&lab, "ic");
        traffic.during(4, 40, || ());
        let account = traffic.settle(&d, "idle_connections_do_not_starve_postfix::content_filter");
        let (closed, with_421) = closed_by_handoff(&idle);
        eprintln!(
            "hostile: idle LMTP connections {} (cap {cap}), closed to make room {closed} \
             ({with_421} with 421 4.3.2), still open {}",
            idle.len(),
            idle.len() - closed
        );
        assert!(closed >= idle.len() - cap, "closed {closed}");
        assert_eq!(with_421, closed, "each was told why");
        assert!(account.accepted.len() >= 40);
    }
}

/// One handoff with both front ends: a Postfix that uses it as its milter and another that uses
/// it as its content filter, both sending all along.
struct Both {
    d: Daemon,
    milter: Lab,
    filter: Lab,
}

impl Both {
    /// `lmtp`: more `[lmtp]` settings.
    fn start(lmtp: &str) -> Both {
        let reinject = free_port();
        let d = Daemon::start_content_filter_with(POLICY, &format!("127.0.0.1:{reinject}"), lmtp);
        let milter = lab_for(&d);
        // handoff opens a connection to the reinjection listener (10 processes, as in
        // master.cf.content-filter) for each LMTP session that delivers. Postfix's own
        // deliveries to handoff (up to 10) must leave some for the tests' LMTP clients, or
        // those wait for a reinjection process as long as Postfix keeps sending.
        let filter = Lab::start(
            LabConfig::default()
                .content_filter(d.lmtp_port.unwrap(), reinject)
                .main_cf_line("handoff_destination_concurrency_limit = 5"),
        );
        Both { d, milter, filter }
    }

    fn lmtp_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.d.lmtp_port.unwrap()).into()
    }
}

/// Writes `bytes` one at a time, `gap` apart.
fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) {
    for b in bytes {
        stream.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(gap);
    }
}

/// Everything the peer sends until it closes the connection.
fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading until handoff closes: {e}"),
    }
    got
}

/// A milter session as Postfix opens it, then one message to the departed account carrying `id`.
fn milter_session(id: &str) -> Vec<Command> {
    vec![
        Command::OptNeg {
            version: 6,
            actions: Actions::from_bits(0x1FF),
            protocol: Protocol::from_bits(0x1F_FFFF),
        },
        Command::Connect {
            hostname: "slow.example".into(),
            family: Family::Inet4,
            port: 40000,
            address: "192.0.2.7".into(),
        },
        Command::Mail(vec!["<slow@example.net>".into()]),
        Command::Rcpt(vec!["<gone@corp.example>".into()]),
        Command::Header {
            name: "Subject".into(),
            value: format!(" {id}").into_bytes(),
        },
        Command::Header {
            name: "Message-ID".into(),
            value: format!(" <{id}@faults.example>").into_bytes(),
        },
        Command::Body(format!("Message {id}, one byte at a time.\r\n").into_bytes()),
        Command::BodyEob,
        Command::Quit,
    ]
}

fn encode(cmds: &[Command]) -> Vec<u8> {
    let mut out = Vec::new();
    cmds.iter().for_each(|c| c.encode(&mut out));
    out
}

/// A milter client that writes a whole session one byte at a time; returns handoff's replies.
fn slow_milter(port: u16, id: &str, gap: Duration) -> Vec<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    trickle(&mut s, &encode(&milter_session(id)), gap);
    let mut decoder = FrameDecoder::new();
    decoder.feed(&read_to_end(&mut s));
    let mut replies = Vec::new();
    while let Decoded::Frame(r) = decoder.decode_reply().unwrap() {
        replies.push(r);
    }
    assert_eq!(decoder.buffered(), 0, "{id}: a reply cut off");
    replies
}

/// A message as an LMTP client sends it after DATA (dot-stuffed, ended by CRLF.CRLF).
fn lmtp_content(id: &str) -> Vec<u8> {
    crate::support::encode_data(
        message_between(id, "slow@example.net", "gone@corp.example").as_bytes(),
    )
}

/// An LMTP client that writes a whole session one byte at a time (pipelined: it never waits
/// for a reply); returns the codes of handoff's replies.
fn slow_lmtp(addr: SocketAddr, id: &str, gap: Duration) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut session = b"LHLO slow.example\r\nMAIL FROM:<slow@example.net>\r\n\
                        RCPT TO:<gone@corp.example>\r\nDATA\r\n"
        .to_vec();
    session.extend_from_slice(&lmtp_content(id));
    session.extend_from_slice(b"QUIT\r\n");
    trickle(&mut s, &session, gap);
    let text = String::from_utf8(read_to_end(&mut s)).unwrap();
    // The last line of each reply: three digits and a space.
    text.lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

/// Clients that write a valid session one byte at a time (a few milliseconds apart) on both
/// ports, and clients that stop in the middle of a message and hang up, while both Postfix
/// instances send through handoff. The slow sessions complete with exactly the replies a fast
/// one gets; the cut ones leave nothing behind; Postfix's mail is all accepted at the first
/// try, journaled and delivered.
#[test]
fn byte_at_a_time_clients_do_not_block_others() {
    const SLOW: usize = 3;
    let gap = Duration::from_millis(3);
    let b = Both::start("");
    let (port, addr) = (b.d.milter_port, b.lmtp_addr());
    let milter_traffic = Traffic::new(&b.milter, "bm");
    let filter_traffic = Traffic::new(&b.filter, "bf");
    let started = Instant::now();
    let (milter_replies, lmtp_codes) = milter_traffic.during(2, 20, || {
        filter_traffic.during(2, 20, || {
            std::thread::scope(|s| {
                let milters: Vec<_> = (0..SLOW)
                    .map(|i| s.spawn(move || slow_milter(port, &format!("slow-m{i}"), gap)))
                    .collect();
                let lmtps: Vec<_> = (0..SLOW)
                    .map(|i| s.spawn(move || slow_lmtp(addr, &format!("slow-l{i}"), gap)))
                    .collect();
                // Hang up in the middle of a message: inside the milter body frame (its last 40
                // bytes, end of message and QUIT never sent), and halfway through the LMTP
                // content.
                s.spawn(move || {
                    let bytes = encode(&milter_session("cut-m"));
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    let cut = bytes.len() - 40;
                    trickle(&mut s, &bytes[..cut], gap);
                });
                s.spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let mut session = b"LHLO cut.example\r\nMAIL FROM:<slow@example.net>\r\n\
                                        RCPT TO:<gone@corp.example>\r\nDATA\r\n"
                        .to_vec();
                    let content = lmtp_content("cut-l");
                    session.extend_from_slice(&content[..content.len() / 2]);
                    trickle(&mut s, &session, gap);
                });
                (
                    milters
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .collect::<Vec<_>>(),
                    lmtps
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .collect::<Vec<_>>(),
                )
            })
        })
    });
    let slow_took = started.elapsed();
    for (i, replies) in milter_replies.iter().enumerate() {
        assert!(
            matches!(replies[0], Reply::OptNeg { .. }),
            "slow-m{i}: {replies:?}"
        );
        assert_eq!(
            replies[1..3],
            [Reply::Continue, Reply::Continue],
            "MAIL, RCPT: {replies:?}"
        );
        assert!(
            replies.contains(&Reply::DelRcpt("<gone@corp.example>".into())),
            "{replies:?}"
        );
        assert!(
            replies.contains(&Reply::AddRcpt("<cs@corp.example>".into())),
            "{replies:?}"
        );
        assert_eq!(
            replies.last(),
            Some(&Reply::Continue),
            "end of message: {replies:?}"
        );
    }
    for (i, codes) in lmtp_codes.iter().enumerate() {
        // Greeting, LHLO, MAIL, RCPT, DATA, the recipient's end-of-data reply, QUIT.
        assert_eq!(codes, &[220, 250, 250, 250, 354, 250, 221], "slow-l{i}");
        filter_traffic.also_accepted(format!("slow-l{i}"));
    }
    let filter = filter_traffic.settle(&b.d, "byte_at_a_time (content filter)");
    let milter = milter_traffic.settle(&b.d, "byte_at_a_time (milter)");
    let journal = journaled_ids(&b.d.journal_dir());
    for i in 0..SLOW {
        assert_eq!(
            journal.get(&format!("slow-m{i}")),
            Some(&1),
            "slow-m{i} journaled"
        );
    }
    assert!(
        !journal.contains_key("cut-m") && !journal.contains_key("cut-l"),
        "cut sessions left nothing"
    );
    assert!(!filter.delivered.contains_key("cut-l"));
    eprintln!(
        "hostile: byte_at_a_time: slow milter sessions {SLOW}/{SLOW} complete and journaled, \
         slow LMTP sessions {SLOW}/{SLOW} delivered, cut sessions 2 left nothing, {:.1?}; \
         Postfix meanwhile: {} through the milter, {} through the content filter, 0 lost",
        slow_took,
        milter.accepted.len(),
        filter.accepted.len() - SLOW,
    );
}

/// Writes `head`, then up to `filler` more bytes until handoff hangs up; returns what handoff
/// sent back and whether it closed the connection within 10 s.
fn oversized_frame(port: u16, head: &[u8], filler: usize) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(head);
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < filler && s.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (got, closed)
}

/// LHLO, MAIL, RCPT to the departed account, then DATA.
fn lmtp_to_data(addr: SocketAddr) -> SmtpClient {
    let mut c = SmtpClient::connect(addr).unwrap();
    assert_eq!(c.command("LHLO big.example").unwrap().code, 250);
    assert_eq!(c.mail_from(SENDER).unwrap().code, 250);
    assert_eq!(c.rcpt_to("gone@corp.example").unwrap().code, 250);
    assert_eq!(c.command("DATA").unwrap().code, 354);
    c
}

/// Oversized input on both ports, four connections of each kind at once, while both Postfix
/// instances send through handoff:
///
/// - milter frames declaring 2^31-1 bytes and 1 GiB, followed by 4 MiB: handoff hangs up as
///   soon as it has read the length (the codec's limit is 1 MiB), without a reply (the milter
///   protocol has none for a broken peer);
/// - an LMTP command line of 1 MiB without CRLF: handoff skips it and answers `500 5.5.6` when
///   the line ends, and the session goes on;
/// - LMTP content with a 1 MiB line, and a 3 MiB message with `max_message_mb = 1`: read to its
///   end, then `500 5.5.6` and `552 5.3.4`, nothing journaled or delivered.
///
/// handoff's peak RSS grows by less than 20 MiB over all of it, and Postfix's mail is all
/// accepted at the first try, journaled and delivered.
#[test]
fn oversized_frames_and_lines_are_refused_cleanly() {
    const EACH: usize = 4;
    const MIB: usize = 1024 * 1024;
    let b = Both::start("max_message_mb = 1\n");
    let (port, addr) = (b.d.milter_port, b.lmtp_addr());
    let milter_traffic = Traffic::new(&b.milter, "om");
    let filter_traffic = Traffic::new(&b.filter, "of");
    // Warm up (both front ends, the journal) before taking the baseline.
    milter_traffic.during(2, 10, || ());
    filter_traffic.during(2, 10, || ());
    let hwm_before = b.d.memory_kib("VmHWM");
    let refused = AtomicUsize::new(0);
    milter_traffic.during(2, 30, || {
        filter_traffic.during(2, 30, || {
            std::thread::scope(|s| {
                let refused = &refused;
                for i in 0..EACH {
                    s.spawn(move || {
                        for head in [[0x7f, 0xff, 0xff, 0xff, b'O'], [0x40, 0, 0, 0, b'B']] {
                            let (got, closed) = oversized_frame(port, &head, 4 * MIB);
                            assert!(closed, "milter {i}: {head:?} still open");
                            assert!(got.is_empty(), "milter {i}: {head:?} answered {got:?}");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    s.spawn(move || {
                        let mut c = SmtpClient::connect(addr).unwrap();
                        assert_eq!(c.command("LHLO long.example").unwrap().code, 250);
                        c.write_raw(&vec![b'A'; MIB]).unwrap();
                        let r = c.command("").unwrap();
                        assert_eq!(r.status(), "500 5.5.6", "line {i}: {r}");
                        assert_eq!(c.noop().unwrap().code, 250, "the session goes on");
                        assert_eq!(c.quit().unwrap().code, 221);
                        refused.fetch_add(1, Ordering::Relaxed);
                    });
                    s.spawn(move || {
                        let id = format!("long-line-{i}");
                        let mut c = lmtp_to_data(addr);
                        let mut content =
                            message_between(&id, SENDER, "gone@corp.example").into_bytes();
                        content.extend(std::iter::repeat_n(b'L', MIB));
                        content.extend_from_slice(b"\r\n.\r\n");
                        c.write_raw(&content).unwrap();
                        let r = c.read_reply().unwrap();
                        assert_eq!(r.status(), "500 5.5.6", "{id}: {r}");
                        assert_eq!(c.quit().unwrap().code, 221);
                        refused.fetch_add(1, Ordering::Relaxed);
                    });
                    s.spawn(move || {
                        let id = format!("too-big-{i}");
                        let mut c = lmtp_to_data(addr);
                        let mut content = message_between(&id, SENDER, "gone@corp.example");
                        let line = format!("{}\r\n", "B".repeat(98));
                        content.push_str(&line.repeat(3 * MIB / line.len()));
                        c.write_raw(&crate::support::encode_data(content.as_bytes()))
                            .unwrap();
                        let r = c.read_reply().unwrap();
                        assert_eq!(r.status(), "552 5.3.4", "{id}: {r}");
                        assert_eq!(c.quit().unwrap().code, 221);
                        refused.fetch_add(1, Ordering::Relaxed);
                    });
                }
            })
        })
    });
    let hwm_after = b.d.memory_kib("VmHWM");
    let filter = filter_traffic.settle(&b.d, "oversized (content filter)");
    let milter = milter_traffic.settle(&b.d, "oversized (milter)");
    let journal = journaled_ids(&b.d.journal_dir());
    for i in 0..EACH {
        for id in [format!("long-line-{i}"), format!("too-big-{i}")] {
            assert!(!journal.contains_key(&id), "{id} journaled");
            assert!(!filter.delivered.contains_key(&id), "{id} delivered");
        }
    }
    let refused = refused.into_inner();
    assert_eq!(refused, 5 * EACH);
    let growth = hwm_after.saturating_sub(hwm_before);
    eprintln!(
        "hostile: oversized: {refused} oversized frames, lines and messages refused \
         ({EACH} each of 2^31-1 and 1 GiB milter frames, 1 MiB command lines, 1 MiB content \
         lines, 3 MiB messages); handoff peak RSS {hwm_before} -> {hwm_after} KiB \
         (+{growth} KiB); Postfix meanwhile: {} through the milter, {} through the content \
         filter, 0 lost",
        milter.accepted.len(),
        filter.accepted.len(),
    );
    assert!(growth < 20 * 1024, "peak RSS grew by {growth} KiB");
}
