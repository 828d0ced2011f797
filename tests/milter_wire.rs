//! The milter server over real sockets, driven by a fake MTA built on the codec: the exact
//! replies, split writes, hostile frames, and shutdown while a message is in flight.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use handoff::milter::codec::{Actions, Command, Decoded, Family, FrameDecoder, Protocol, Reply};
use handoff::milter::session::LOOP_HEADER;

use crate::daemon::Daemon;

pub const POLICY: &str = r#"
[domains]
local = ["corp.example"]
[aliases]
"sales@corp.example" = ["alice@corp.example", "bob@corp.example"]
[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
[accounts."dis@corp.example"]
state = "disabled"
"#;

/// A minimal MTA side of the milter protocol.
pub struct FakeMta {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl FakeMta {
    pub fn connect(port: u16) -> FakeMta {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeMta {
            stream,
            decoder: FrameDecoder::new(),
        }
    }

    pub fn send(&mut self, cmd: &Command) {
        let mut out = Vec::new();
        cmd.encode(&mut out);
        self.stream.write_all(&out).unwrap();
    }

    /// The next reply, or None when the filter closed the connection.
    pub fn recv(&mut self) -> Option<Reply> {
        let mut buf = [0u8; 4096];
        loop {
            match self.decoder.decode_reply().unwrap() {
                Decoded::Frame(r) => return Some(r),
                Decoded::TooLarge { declared } => panic!("reply of {declared} bytes"),
                Decoded::Incomplete => {}
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.decoder.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Replies up to and including the final one of an end of message.
    pub fn recv_until_final(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Some(r) = self.recv() {
            let last = matches!(
                r,
                Reply::Continue
                    | Reply::Accept
                    | Reply::Tempfail
                    | Reply::Reject
                    | Reply::ReplyCode(_)
            );
            out.push(r);
            if last {
                break;
            }
        }
        out
    }

    /// OPTNEG offering everything Postfix offers, then CONNECT from a remote client.
    pub fn handshake(&mut self) -> Reply {
        self.send(&Command::OptNeg {
            version: 6,
            actions: Actions::from_bits(0x1FF),
            protocol: Protocol::from_bits(0x1F_FFFF),
        });
        let r = self.recv().expect("OPTNEG reply");
        self.send(&Command::Connect {
            hostname: "client.example".into(),
            family: Family::Inet4,
            port: 40000,
            address: "192.0.2.1".into(),
        });
        r
    }

    /// MAIL and RCPT for each recipient, returning the RCPT replies.
    pub fn envelope(&mut self, from: &str, to: &[&str]) -> Vec<Reply> {
        self.send(&Command::Mail(vec![from.into()]));
        assert_eq!(self.recv(), Some(Reply::Continue));
        to.iter()
            .map(|t| {
                self.send(&Command::Rcpt(vec![t.to_string()]));
                self.recv().expect("RCPT reply")
            })
            .collect()
    }

    pub fn content(&mut self) -> Vec<Reply> {
        self.send(&Command::Header {
            name: "Subject".into(),
            value: b"hello".to_vec(),
        });
        self.send(&Command::Body(b"body\r\n".to_vec()));
        self.send(&Command::BodyEob);
        self.recv_until_final()
    }
}

#[test]
fn a_whole_message_gets_exact_replies() {
    let d = Daemon::start(POLICY);
    let mut mta = FakeMta::connect(d.milter_port);
    let Reply::OptNeg {
        version,
        actions,
        macros,
        ..
    } = mta.handshake()
    else {
        panic!("no OPTNEG reply")
    };
    assert_eq!(version, 6);
    // The edits (CHGFROM for SRS), and the macro lists (the fake MTA offers every action, as
    // Postfix does).
    assert_eq!(
        actions,
        Actions::ADDHDRS
            | Actions::ADDRCPT
            | Actions::DELRCPT
            | Actions::CHGFROM
            | Actions::SETSYMLIST
    );
    assert!(
        macros.contains(&(2, "{auth_authen}".to_string())) && macros.contains(&(5, "i".into())),
        "{macros:?}"
    );
    let rcpt = mta.envelope(
        "<a@partner.example>",
        &[
            "<gone@corp.example>",
            "<dis@corp.example>",
            "<sales@corp.example>",
        ],
    );
    assert_eq!(rcpt[0], Reply::Continue);
    assert_eq!(
        rcpt[1],
        Reply::ReplyCode("550 5.2.1 <dis@corp.example>: mailbox disabled".into())
    );
    assert_eq!(rcpt[2], Reply::Continue);
    let end = mta.content();
    assert_eq!(
        end,
        vec![
            Reply::DelRcpt("<gone@corp.example>".into()),
            Reply::DelRcpt("<sales@corp.example>".into()),
            Reply::AddRcpt("<cs@corp.example>".into()),
            Reply::AddRcpt("<alice@corp.example>".into()),
            Reply::AddRcpt("<bob@corp.example>".into()),
            Reply::AddHeader {
                name: LOOP_HEADER.into(),
                value: format!(" {}", d.loop_marker("gone@corp.example")).into_bytes()
            },
            Reply::Continue,
        ]
    );
    // A second message on the same connection, after Postfix's ABORT.
    mta.send(&Command::Abort);
    let rcpt = mta.envelope("<a@partner.example>", &["<alice@corp.example>"]);
    assert_eq!(rcpt, vec![Reply::Continue]);
    assert_eq!(mta.content(), vec![Reply::Continue]);
    mta.send(&Command::Quit);
    assert_eq!(mta.recv(), None, "QUIT closes the connection");
}

#[test]
fn a_peer_writing_one_byte_at_a_time_is_served() {
    let d = Daemon::start(POLICY);
    let mut stream = TcpStream::connect(("127.0.0.1", d.milter_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut bytes = Vec::new();
    Command::OptNeg {
        version: 6,
        actions: Actions::from_bits(0x1FF),
        protocol: Protocol::from_bits(0x1F_FFFF),
    }
    .encode(&mut bytes);
    for b in bytes {
        stream.write_all(&[b]).unwrap();
    }
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 256];
    let reply = loop {
        if let Decoded::Frame(r) = dec.decode_reply().unwrap() {
            break r;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed");
        dec.feed(&buf[..n]);
    };
    assert!(
        matches!(reply, Reply::OptNeg { version: 6, .. }),
        "{reply:?}"
    );
}

#[test]
fn hostile_frames_close_the_connection_and_the_server_keeps_serving() {
    let d = Daemon::start(POLICY);
    let cases: [&[u8]; 4] = [
        &[0xff, 0xff, 0xff, 0xf0, b'O'], // a 4 GiB frame
        &[0, 0, 0, 0],                   // zero length
        &[0, 0, 0, 2, b'Z', 0],          // unknown command
        &[0, 0, 0, 3, b'R', b'a', b'b'], // RCPT before OPTNEG, and no NUL
    ];
    for bytes in cases {
        let mut s = TcpStream::connect(("127.0.0.1", d.milter_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "expected the filter to hang up on {bytes:?}");
    }
    // Still serving.
    let mut mta = FakeMta::connect(d.milter_port);
    assert!(matches!(mta.handshake(), Reply::OptNeg { .. }));
    // The warnings are written as each connection task ends, which may be after we saw EOF.
    crate::daemon::wait_for(Duration::from_secs(10), "the warnings in the log", || {
        let log = d.log_text();
        (log.contains("over the 1048576 byte limit") && log.contains("unknown command byte"))
            .then_some(())
    });
}

#[test]
fn idle_connections_do_not_starve_a_working_one() {
    let d = Daemon::start(POLICY);
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", d.milter_port)).unwrap())
        .collect();
    let mut mta = FakeMta::connect(d.milter_port);
    mta.handshake();
    assert_eq!(
        mta.envelope("<a@partner.example>", &["<dis@corp.example>"])
            .len(),
        1
    );
    for s in &idle {
        let _ = s.shutdown(Shutdown::Both);
    }
}

#[test]
fn sigterm_lets_a_message_in_flight_finish_then_exits() {
    let mut d = Daemon::start(POLICY);
    let mut busy = FakeMta::connect(d.milter_port);
    busy.handshake();
    busy.envelope("<a@partner.example>", &["<gone@corp.example>"]);
    let mut idle = FakeMta::connect(d.milter_port);
    idle.handshake();
    d.signal("TERM");
    // The idle session is closed between messages...
    assert_eq!(idle.recv(), None);
    // ...the busy one still gets its answer, then is closed.
    let end = busy.content();
    assert_eq!(end.last(), Some(&Reply::Continue), "{end:?}");
    assert_eq!(busy.recv(), None);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_unix_socket_listener_has_mode_0660_and_serves() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;

    let sockdir = tempfile::tempdir().unwrap();
    let path = sockdir.path().join("milter.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let d = Daemon::start_listening(POLICY, Some(&format!("unix:{}", path.display())), &[]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    Command::OptNeg {
        version: 6,
        actions: Actions::from_bits(0x1FF),
        protocol: Protocol::from_bits(0x1F_FFFF),
    }
    .encode(&mut out);
    s.write_all(&out).unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 256];
    let reply = loop {
        if let Decoded::Frame(r) = dec.decode_reply().unwrap() {
            break r;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed:\n{}", d.log_text());
        dec.feed(&buf[..n]);
    };
    assert!(
        matches!(reply, Reply::OptNeg { version: 6, .. }),
        "{reply:?}"
    );
}
