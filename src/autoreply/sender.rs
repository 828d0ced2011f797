//! Sending a reply: one SMTP transaction with mail-send to `[relay] address`, envelope sender
//! `<>` (RFC 3834 section 3.3: replies go out with a null return path so that they can never
//! bounce back into another auto-reply), retried with backoff while the relay is away.
//!
//! The relay is meant to be a Postfix smtpd without milters (deploy/postfix/master.cf.relay), so
//! the reply is neither filtered nor journaled a second time.

use std::net::SocketAddr;
use std::time::Duration;

use mail_send::SmtpClient;
use mail_send::smtp::AssertReply;
use mail_send::smtp::message::{Address as Envelope, Message, Parameters};
use smtp_proto::EXT_SMTP_UTF8;

use crate::address::Address;

/// Where and how replies are handed over.
#[derive(Debug, Clone)]
pub struct Relay {
    pub addr: SocketAddr,
    /// The EHLO name.
    pub helo: String,
    /// The whole SMTP session, greeting to QUIT. Postfix's smtpd answers within seconds; its
    /// own command timeout is 300 s (smtpd_timeout), far more than a sane relay needs.
    pub timeout: Duration,
}

/// When to try again. The defaults try 8 times over about 2 minutes of backoff (plus each
/// attempt's own time), well within the pending-claim lifetime of the memory.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` (n counted from 1): doubling, capped.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Why a reply was not handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The relay refused the reply for good (a 5xx): trying again cannot help.
    #[error("relay {relay} refused the reply: {reply}")]
    Rejected { relay: SocketAddr, reply: String },
    /// The reply needs SMTPUTF8 (a UTF-8 recipient address or header, RFC 6531) and the relay
    /// does not offer it. Not retried: the relay's configuration (Postfix `smtputf8_enable`)
    /// decides this, not a passing condition; nothing is sent, never a downgraded copy.
    #[error("relay {relay} does not offer SMTPUTF8, which the reply to <{to}> needs (RFC 6531)")]
    NoSmtpUtf8 { relay: SocketAddr, to: String },
    /// The relay stayed unreachable or answered 4xx through every attempt.
    #[error("relay {relay} unavailable after {attempts} attempts: {last}")]
    GaveUp {
        relay: SocketAddr,
        attempts: u32,
        last: String,
    },
}

impl SendError {
    /// A metric label.
    pub fn label(&self) -> &'static str {
        match self {
            SendError::Rejected { .. } => "relay_rejected",
            SendError::NoSmtpUtf8 { .. } => "relay_no_smtputf8",
            SendError::GaveUp { .. } => "relay_unavailable",
        }
    }
}

enum Attempt {
    Retry(String),
    Permanent(String),
    NoSmtpUtf8,
}

/// Hands `message` over for `to`, retrying per `retry`. Returns the number of attempts made.
pub async fn send(
    relay: &Relay,
    to: &Address,
    message: &[u8],
    retry: RetryPolicy,
) -> Result<u32, SendError> {
    let mut n = 0;
    loop {
        n += 1;
        let last = match send_once(relay, to, message).await {
            Ok(()) => return Ok(n),
            Err(Attempt::Permanent(reply)) => {
                return Err(SendError::Rejected {
                    relay: relay.addr,
                    reply,
                });
            }
            Err(Attempt::NoSmtpUtf8) => {
                return Err(SendError::NoSmtpUtf8 {
                    relay: relay.addr,
                    to: to.to_string(),
                });
            }
            Err(Attempt::Retry(why)) => why,
        };
        if n >= retry.attempts {
            return Err(SendError::GaveUp {
                relay: relay.addr,
                attempts: n,
                last,
            });
        }
        let wait = retry.backoff(n);
        tracing::warn!(relay = %relay.addr, attempt = n, retry_in = ?wait, "auto-reply not handed over: {last}");
        tokio::time::sleep(wait).await;
    }
}

async fn send_once(relay: &Relay, to: &Address, message: &[u8]) -> Result<(), Attempt> {
    // RFC 5321 form (mail-send writes the address between the brackets as it is): a sender
    // such as `"x(y)z"@d` or `"a> NOTIFY=NEVER"@d` must stay one quoted local part.
    let rcpt = crate::address::smtp_mailbox(to.as_str())
        .map_err(|e| Attempt::Permanent(format!("cannot address the reply: {e}")))?;
    let utf8 = needs_smtputf8(to, message);
    let session = async {
        let mut client = SmtpClient::connect(relay.addr, relay.timeout).await?;
        client.read().await?.assert_positive_completion()?;
        let ehlo = client.ehlo(&relay.helo).await?;
        let mut mail_params = Parameters::new();
        if utf8 {
            if !ehlo.has_capability(EXT_SMTP_UTF8) {
                let _ = client.quit().await;
                return Ok(false);
            }
            mail_params.add("SMTPUTF8");
        }
        let envelope = Message {
            mail_from: Envelope::new("", mail_params),
            rcpt_to: vec![Envelope::new(rcpt.as_ref(), Parameters::new())],
            body: message.into(),
        };
        client.send(envelope).await?;
        // The reply is accepted once DATA got its 250; a failed QUIT changes nothing.
        let _ = client.quit().await;
        Ok::<bool, mail_send::Error>(true)
    };
    match tokio::time::timeout(relay.timeout, session).await {
        Err(_) => Err(Attempt::Retry(format!(
            "no answer within {:?}",
            relay.timeout
        ))),
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(Attempt::NoSmtpUtf8),
        Ok(Err(mail_send::Error::UnexpectedReply(r))) if r.code >= 500 => Err(Attempt::Permanent(
            format!("{} {}", r.code, r.message.trim()),
        )),
        Ok(Err(mail_send::Error::UnexpectedReply(r))) => {
            Err(Attempt::Retry(format!("{} {}", r.code, r.message.trim())))
        }
        Ok(Err(e)) => Err(Attempt::Retry(e.to_string())),
    }
}

/// Whether the reply can only travel with SMTPUTF8 (RFC 6531 section 3.2): the recipient's local
/// part is UTF-8 (domains are kept as A-labels), or the header has raw UTF-8 (RFC 6532).
fn needs_smtputf8(to: &Address, message: &[u8]) -> bool {
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    to.needs_smtputf8() || !message[..head_end].is_ascii()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// What a fake relay saw: (MAIL FROM argument, RCPT TO arguments, DATA).
    pub type Seen = Arc<Mutex<Vec<(String, Vec<String>, String)>>>;

    /// A minimal SMTP server on 127.0.0.1:0 that answers DATA with `data_reply` (e.g.
    /// "250 2.0.0 ok") and records each transaction.
    pub async fn fake_relay(data_reply: &'static str) -> (SocketAddr, Seen) {
        fake_relay_offering(data_reply, &["8BITMIME"]).await
    }

    /// [`fake_relay`] whose EHLO offers `extensions`.
    pub async fn fake_relay_offering(
        data_reply: &'static str,
        extensions: &[&str],
    ) -> (SocketAddr, Seen) {
        let ehlo: String = std::iter::once("fake")
            .chain(extensions.iter().copied())
            .enumerate()
            .map(|(i, e)| {
                let sep = if i == extensions.len() { ' ' } else { '-' };
                format!("250{sep}{e}\r\n")
            })
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                let ehlo = ehlo.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut lines = BufReader::new(rd).lines();
                    let _ = wr.write_all(b"220 fake ESMTP\r\n").await;
                    let (mut from, mut rcpts, mut data) =
                        (String::new(), Vec::new(), None::<String>);
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(body) = data.as_mut() {
                            if line == "." {
                                let text = std::mem::take(body);
                                data = None;
                                record.lock().unwrap().push((
                                    std::mem::take(&mut from),
                                    std::mem::take(&mut rcpts),
                                    text,
                                ));
                                let _ = wr.write_all(format!("{data_reply}\r\n").as_bytes()).await;
                            } else {
                                body.push_str(&line);
                                body.push('\n');
                            }
                            continue;
                        }
                        let upper = line.to_ascii_uppercase();
                        let answer = if upper.starts_with("EHLO") {
                            ehlo.clone()
                        } else if upper.starts_with("MAIL FROM:") {
                            from = line[10..].to_string();
                            "250 2.1.0 ok\r\n".to_string()
                        } else if upper.starts_with("RCPT TO:") {
                            rcpts.push(line[8..].to_string());
                            "250 2.1.5 ok\r\n".to_string()
                        } else if upper == "DATA" {
                            data = Some(String::new());
                            "354 go ahead\r\n".to_string()
                        } else if upper == "QUIT" {
                            let _ = wr.write_all(b"221 bye\r\n").await;
                            break;
                        } else {
                            "250 ok\r\n".to_string()
                        };
                        let _ = wr.write_all(answer.as_bytes()).await;
                    }
                });
            }
        });
        (addr, seen)
    }

    fn relay(addr: SocketAddr) -> Relay {
        Relay {
            addr,
            helo: "test.example".into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        }
    }

    fn to() -> Address {
        Address::parse_strict("ext@partner.example").unwrap()
    }

    #[tokio::test]
    async fn hands_over_with_a_null_sender() {
        let (addr, seen) = fake_relay("250 2.0.0 queued").await;
        let msg = b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n";
        let n = send(&relay(addr), &to(), msg, fast()).await.unwrap();
        assert_eq!(n, 1);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "<>");
        assert_eq!(seen[0].1, ["<ext@partner.example>"]);
        assert!(
            seen[0].2.contains("..leading dot"),
            "dot-stuffed on the wire"
        );
    }

    /// The reply goes to the envelope sender, whose local part may need quotes: written raw,
    /// `x(y)z` is a syntax error and `a> NOTIFY=NEVER` a second recipient's parameters.
    #[tokio::test]
    async fn the_recipient_is_written_in_rfc_5321_form() {
        let (addr, seen) = fake_relay("250 2.0.0 queued").await;
        for (sender, want) in [
            ("x(y)z@partner.example", "<\"x(y)z\"@partner.example>"),
            ("dq\"x@partner.example", "<\"dq\\\"x\"@partner.example>"),
            (
                "v@evil.example> notify=never@partner.example",
                "<\"v@evil.example> notify=never\"@partner.example>",
            ),
        ] {
            let to = Address::from_envelope(sender).unwrap();
            send(&relay(addr), &to, b"x\r\n", fast()).await.unwrap();
            assert_eq!(seen.lock().unwrap().pop().unwrap().1, [want], "{sender}");
        }
        let bad = Address::from_envelope("a\rRSET@partner.example").unwrap();
        let err = send(&relay(addr), &bad, b"x\r\n", fast())
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Rejected { .. }), "{err}");
        assert!(seen.lock().unwrap().is_empty(), "nothing sent for {bad:?}");
    }

    #[tokio::test]
    async fn a_permanent_refusal_is_not_retried() {
        let (addr, seen) = fake_relay("554 5.7.1 no thanks").await;
        let err = send(&relay(addr), &to(), b"x\r\n", fast())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Rejected { reply, .. } if reply.starts_with("554")),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(err.label(), "relay_rejected");
    }

    #[tokio::test]
    async fn a_temporary_refusal_is_retried_then_given_up() {
        let (addr, seen) = fake_relay("451 4.3.0 try later").await;
        let err = send(&relay(addr), &to(), b"x\r\n", fast())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::GaveUp { attempts: 3, .. }),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_relay_that_is_down_is_retried_then_given_up() {
        // A port that was free a moment ago: connection refused.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let started = std::time::Instant::now();
        let err = send(&relay(addr), &to(), b"x\r\n", fast())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::GaveUp { attempts: 3, .. }),
            "{err}"
        );
        assert_eq!(err.label(), "relay_unavailable");
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "backed off twice"
        );
    }

    #[tokio::test]
    async fn a_utf8_recipient_goes_out_with_smtputf8() {
        let (addr, seen) = fake_relay_offering("250 2.0.0 queued", &["8BITMIME", "SMTPUTF8"]).await;
        let to = Address::from_envelope("<张三@公司.中国>").unwrap();
        send(&relay(addr), &to, b"Subject: x\r\n\r\nbody\r\n", fast())
            .await
            .unwrap();
        // An ASCII reply to an ASCII address needs no SMTPUTF8.
        send(
            &relay(addr),
            &self::to(),
            b"Subject: x\r\n\r\nbody\r\n",
            fast(),
        )
        .await
        .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "<> SMTPUTF8");
        assert_eq!(seen[0].1, ["<张三@xn--55qx5d.xn--fiqs8s>"]);
        assert_eq!(seen[1].0, "<>");
    }

    #[tokio::test]
    async fn a_relay_without_smtputf8_gets_nothing_and_a_clear_reason() {
        let (addr, seen) = fake_relay("250 2.0.0 queued").await;
        let to = Address::from_envelope("<张三@corp.example>").unwrap();
        let err = send(&relay(addr), &to, b"Subject: x\r\n\r\nbody\r\n", fast())
            .await
            .unwrap_err();
        assert_eq!(err.label(), "relay_no_smtputf8");
        assert!(err.to_string().contains("does not offer SMTPUTF8"), "{err}");
        // UTF-8 in the header alone needs it too (RFC 6532).
        let err = send(
            &relay(addr),
            &self::to(),
            "Subject: 已离职\r\n\r\nx\r\n".as_bytes(),
            fast(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.label(), "relay_no_smtputf8");
        assert!(seen.lock().unwrap().is_empty(), "nothing handed over");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=8).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.backoff(100), p.max_backoff);
    }
}
