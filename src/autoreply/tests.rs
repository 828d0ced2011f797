//! The pipeline from a finished milter message to a sent reply, with a fake relay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::sender::tests::fake_relay;
use super::*;
use crate::policy::Policy;
use crate::runtime::store::PolicyStore;
use crate::transaction::{Client, MessageOutcome, Recipient};

const POLICY: &str = r#"
[relay]
address = "127.0.0.1:9"

[domains]
local = ["corp.example"]

[autoreply]
days = 7
max_per_hour = 3
max_per_hour_per_account = 2

[templates.departed]
subject = "{name} has left: {original_subject}"
body = "Please write to {successor}."
original_subject = "always"

[aliases]
"sales@corp.example" = ["gone@corp.example", "alice@corp.example"]

[accounts."gone@corp.example"]
state = "departed"
name = "Gone Person"
successor = "cs@corp.example"
autoreply = "departed"

[accounts."left@corp.example"]
state = "departed"
successor = "cs@corp.example"
autoreply = "departed"

[accounts."quiet@corp.example"]
state = "departed"
successor = "cs@corp.example"
"#;

fn addr(s: &str) -> Address {
    Address::parse_strict(s).unwrap()
}

/// A message from `sender` to `rcpts` (envelope) with `headers`, as the milter hands it over.
fn message(
    policy: &str,
    sender: Option<&str>,
    rcpts: &[&str],
    headers: &[(&str, &str)],
) -> Message {
    let store = PolicyStore::new(Policy::from_text("p.toml", policy).unwrap());
    let snapshot = store.snapshot();
    let today = jiff::civil::date(2026, 6, 1);
    let recipients = rcpts
        .iter()
        .map(|r| Recipient {
            raw: format!("<{r}>"),
            resolution: engine::resolve(&snapshot.policy, &addr(r), today),
        })
        .collect();
    Message {
        snapshot,
        client: Client::default(),
        queue_id: Some("4ABC".into()),
        sender: sender.and_then(Address::from_envelope),
        sender_raw: sender.map_or("<>".into(), |s| format!("<{s}>")),
        auth_user: None,
        recipients,
        refused: Vec::new(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        headers_truncated: false,
        body_bytes: 10,
        outcome: MessageOutcome::Accept,
        edits: Vec::new(),
        copy_to: None,
        loop_marked: Vec::new(),
    }
}

fn to_gone() -> Message {
    message(
        POLICY,
        Some("ext@partner.example"),
        &["gone@corp.example"],
        &[
            ("To", "gone@corp.example"),
            ("Subject", "Quarterly"),
            ("Message-ID", "<q1@partner.example>"),
        ],
    )
}

fn jobs(msg: &Message) -> Vec<(Address, Result<Job, Suppression>)> {
    plan(msg, jiff::Timestamp::from_second(1_800_000_000).unwrap())
}

#[test]
fn a_departed_recipient_with_a_template_plans_one_reply() {
    let planned = jobs(&to_gone());
    assert_eq!(planned.len(), 1);
    let (account, job) = &planned[0];
    assert_eq!(account.as_str(), "gone@corp.example");
    let job = job.as_ref().unwrap();
    let reply = job.draft.build().unwrap();
    assert_eq!(reply.to.as_str(), "ext@partner.example");
    assert_eq!(reply.from.as_str(), "gone@corp.example");
    assert_eq!(reply.in_reply_to.as_deref(), Some("<q1@partner.example>"));
    assert_eq!(reply.queue_id.as_deref(), Some("4ABC"));
    assert_eq!(job.days, 7);
    assert_eq!(job.max_per_hour_per_account, 2);
    assert_eq!(job.relay, "127.0.0.1:9".parse().unwrap());
    assert_eq!(
        job.key,
        PairKey::new(&addr("gone@corp.example"), &addr("ext@partner.example"))
    );
    let text = String::from_utf8(reply.message).unwrap();
    assert!(
        text.contains("Subject: Gone Person has left: Quarterly\r\n"),
        "{text}"
    );
}

/// The policy's aliases and forwards that reach the account are its addresses too: mail from
/// them (a list the account was on, an old address forwarded to it) gets no reply.
#[test]
fn mail_from_an_alias_or_a_forward_source_of_the_account_is_not_answered() {
    let policy = format!(
        "{POLICY}\n[accounts.\"old-gone@corp.example\"]\nstate = \"departed\"\nforward = [\"gone@corp.example\"]\n"
    );
    let from = |sender: &str| {
        let m = message(
            &policy,
            Some(sender),
            &["gone@corp.example"],
            &[("To", "gone@corp.example")],
        );
        jobs(&m).pop().unwrap().1.err()
    };
    assert_eq!(from("sales@corp.example"), Some(Suppression::OwnAddress));
    assert_eq!(from("old-gone@corp.example"), Some(Suppression::OwnAddress));
    // Another member of the alias is someone else.
    assert_eq!(from("alice@corp.example"), None);
    assert_eq!(from("cs@corp.example"), None);
}

/// `{original_subject}` of a message without a Subject says so; with one, it is the Subject.
#[test]
fn a_message_without_a_subject_gets_a_sensible_reply_subject() {
    let subject_of = |headers: &[(&str, &str)]| {
        let m = message(
            POLICY,
            Some("ext@partner.example"),
            &["gone@corp.example"],
            headers,
        );
        let job = jobs(&m).pop().unwrap().1.unwrap();
        let reply = job.draft.build().unwrap();
        let parsed = mail_parser::MessageParser::new()
            .parse(&reply.message)
            .unwrap();
        parsed.subject().map(str::to_string)
    };
    assert_eq!(
        subject_of(&[("To", "gone@corp.example")]).as_deref(),
        Some("Gone Person has left: (no subject)")
    );
    assert_eq!(
        subject_of(&[("To", "gone@corp.example"), ("Subject", "Q3")]).as_deref(),
        Some("Gone Person has left: Q3")
    );
}

#[test]
fn no_template_or_not_departed_plans_nothing() {
    let m = message(
        POLICY,
        Some("ext@partner.example"),
        &["quiet@corp.example", "alice@corp.example"],
        &[("To", "quiet@corp.example, alice@corp.example")],
    );
    assert!(jobs(&m).is_empty());
}

#[test]
fn an_alias_in_to_counts_and_one_account_answers_once() {
    // Sent to the alias and to the account itself: one reply.
    let m = message(
        POLICY,
        Some("ext@partner.example"),
        &["sales@corp.example", "gone@corp.example"],
        &[("To", "Sales <sales@corp.example>")],
    );
    let planned = jobs(&m);
    assert_eq!(planned.len(), 1);
    assert!(planned[0].1.is_ok());
    // A +detail envelope recipient named as such in Cc.
    let m = message(
        POLICY,
        Some("ext@partner.example"),
        &["gone+news@corp.example"],
        &[("Cc", "gone+news@corp.example")],
    );
    assert!(jobs(&m)[0].1.is_ok());
}

#[test]
fn each_account_gets_its_own_verdict() {
    let m = message(
        POLICY,
        Some("ext@partner.example"),
        &["gone@corp.example", "left@corp.example"],
        &[("To", "gone@corp.example"), ("Bcc", "nobody@corp.example")],
    );
    let planned = jobs(&m);
    assert_eq!(planned.len(), 2);
    assert!(planned[0].1.is_ok());
    assert_eq!(
        planned[1].1.as_ref().unwrap_err(),
        &Suppression::NotAddressed,
        "left@ was a Bcc recipient"
    );
}

fn worker(memory: Memory, journal: JournalHook) -> (AutoReplier, Worker) {
    let config = Config {
        retry: RetryPolicy {
            attempts: 2,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        },
        relay_timeout: Duration::from_secs(5),
        helo: "test.example".into(),
        ..Config::default()
    };
    AutoReplier::new(config, memory, journal)
}

fn local_memory(dir: &tempfile::TempDir) -> Memory {
    Memory::open(dir.path(), None).unwrap()
}

/// The reply to `to_gone()`, sent to `relay`, with caps that do not get in the way.
fn job_to(relay: SocketAddr) -> Job {
    let mut job = jobs(&to_gone()).remove(0).1.unwrap();
    job.relay = relay;
    job.max_per_hour = 100;
    job.max_per_hour_per_account = 100;
    job
}

#[tokio::test]
async fn sent_once_then_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, seen) = fake_relay("250 2.0.0 ok").await;
    let (_, w) = worker(local_memory(&dir), no_journal());
    assert_eq!(
        w.process_one(job_to(relay)).await,
        Outcome::Sent { attempts: 1 }
    );
    assert_eq!(
        w.process_one(job_to(relay)).await,
        Outcome::Suppressed(Suppression::AlreadyReplied)
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "<>");
    assert!(seen[0].2.contains("Auto-Submitted: auto-replied"));
}

#[tokio::test]
async fn the_journal_sees_the_reply_first_and_can_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, seen) = fake_relay("250 2.0.0 ok").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let refusing: JournalHook = Arc::new(move |r: &OutgoingReply| {
        assert_eq!(r.to.as_str(), "ext@partner.example");
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err("disk full".to_string()) })
    });
    let memory = local_memory(&dir);
    let (_, w) = worker(memory.clone(), refusing);
    assert_eq!(
        w.process_one(job_to(relay)).await,
        Outcome::Failed("journal")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(seen.lock().unwrap().is_empty(), "nothing sent unjournaled");
    // The claim was released: with a working journal the sender is answered.
    let (_, w) = worker(memory, no_journal());
    assert_eq!(
        w.process_one(job_to(relay)).await,
        Outcome::Sent { attempts: 1 }
    );
}

#[tokio::test]
async fn a_relay_that_stays_down_fails_the_reply_and_releases_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let memory = local_memory(&dir);
    let (_, w) = worker(memory.clone(), no_journal());
    assert_eq!(
        w.process_one(job_to(down)).await,
        Outcome::Failed("relay_unavailable")
    );
    let (relay, seen) = fake_relay("250 2.0.0 ok").await;
    assert_eq!(
        w.process_one(job_to(relay)).await,
        Outcome::Sent { attempts: 1 }
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // A 5xx is final too, and also frees the claim.
    let (refusing, _) = fake_relay("550 5.7.1 no").await;
    let mut other = job_to(refusing);
    other.key = PairKey::new(&addr("gone@corp.example"), &addr("x@partner.example"));
    assert_eq!(
        w.process_one(other.clone()).await,
        Outcome::Failed("relay_rejected")
    );
    other.relay = relay;
    assert_eq!(w.process_one(other).await, Outcome::Sent { attempts: 1 });
}

#[tokio::test]
async fn hourly_caps_per_account_and_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _) = fake_relay("250 2.0.0 ok").await;
    let (_, w) = worker(local_memory(&dir), no_journal());
    let job_for = |account: &str, sender: &str| {
        let mut j = job_to(relay);
        (j.max_per_hour, j.max_per_hour_per_account) = (3, 2);
        j.draft.account = addr(account);
        j.key = PairKey::new(&addr(account), &addr(sender));
        j
    };
    // max_per_hour_per_account = 2, max_per_hour = 3, counted per clock hour: if the hour
    // turns during the test, its counts are not comparable and it checks nothing.
    let hour = || jiff::Timestamp::now().as_second() / 3600;
    let before = hour();
    let outcomes = [
        w.process_one(job_for("gone@corp.example", "s1@x.example"))
            .await,
        w.process_one(job_for("gone@corp.example", "s2@x.example"))
            .await,
        w.process_one(job_for("gone@corp.example", "s3@x.example"))
            .await,
        w.process_one(job_for("left@corp.example", "s1@x.example"))
            .await,
        w.process_one(job_for("left@corp.example", "s2@x.example"))
            .await,
        // A capped reply released its claim: this sender is not marked as answered.
        w.process_one(job_for("gone@corp.example", "s3@x.example"))
            .await,
    ];
    if hour() == before {
        assert_eq!(
            outcomes,
            [
                Outcome::Sent { attempts: 1 },
                Outcome::Sent { attempts: 1 },
                Outcome::Suppressed(Suppression::AccountRateLimit),
                Outcome::Sent { attempts: 1 },
                Outcome::Suppressed(Suppression::SystemRateLimit),
                Outcome::Suppressed(Suppression::SystemRateLimit),
            ]
        );
    }
}

#[tokio::test]
async fn redis_down_suppresses_and_never_waits_long() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let memory = Memory::open(
        std::path::Path::new("/nonexistent"),
        Some(&format!("redis://127.0.0.1:{port}/")),
    )
    .unwrap();
    let (relay, seen) = fake_relay("250 2.0.0 ok").await;
    let (_, w) = worker(memory, no_journal());
    let started = std::time::Instant::now();
    assert_eq!(
        w.process_one(job_to(relay)).await,
        Outcome::Suppressed(Suppression::StoreUnavailable)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn offer_queues_until_full_then_suppresses() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        queue: 1,
        ..Config::default()
    };
    let (replier, worker) = AutoReplier::new(config, local_memory(&dir), no_journal());
    let msg = to_gone();
    assert_eq!(replier.offer(&msg), [(addr("gone@corp.example"), None)]);
    assert_eq!(
        replier.offer(&msg),
        [(addr("gone@corp.example"), Some(Suppression::QueueFull))]
    );
    // Rules are applied before queueing.
    let list = message(
        POLICY,
        Some("ext@partner.example"),
        &["gone@corp.example"],
        &[
            ("To", "gone@corp.example"),
            ("List-Id", "<x.lists.example>"),
        ],
    );
    assert_eq!(
        replier.offer(&list),
        [(addr("gone@corp.example"), Some(Suppression::MailingList))]
    );
    drop(worker);
    assert_eq!(
        replier.offer(&msg),
        [(addr("gone@corp.example"), Some(Suppression::ShuttingDown))]
    );
    assert!(AutoReplier::disabled().offer(&msg).is_empty());
}

#[tokio::test]
async fn the_worker_sends_what_is_offered_and_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, seen) = fake_relay("250 2.0.0 ok").await;
    let policy = POLICY.replace("127.0.0.1:9", &relay.to_string());
    let (replier, worker) = worker(local_memory(&dir), no_journal());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stop_rx.await;
    }));
    let msg = message(
        &policy,
        Some("ext@partner.example"),
        &["gone@corp.example"],
        &[("To", "gone@corp.example")],
    );
    assert_eq!(replier.offer(&msg), [(addr("gone@corp.example"), None)]);
    // The worker is asynchronous: wait (with a deadline) for the relay to see the reply.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no reply at the relay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(()).unwrap();
    running.await.unwrap();
    assert_eq!(
        replier.offer(&msg),
        [(addr("gone@corp.example"), Some(Suppression::ShuttingDown))]
    );
}

/// Backscatter through `+tags`: every tag of one sender is the same sender to the memory, and
/// the delimiter is the policy's (`+` when the policy turns it off).
#[tokio::test]
async fn tagged_senders_are_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, seen) = fake_relay("250 2.0.0 ok").await;
    let (_, w) = worker(local_memory(&dir), no_journal());
    let from = |policy: &str, sender: &str| {
        let m = message(
            policy,
            Some(sender),
            &["gone@corp.example"],
            &[("To", "gone@corp.example")],
        );
        let mut job = jobs(&m).remove(0).1.unwrap();
        (job.relay, job.max_per_hour, job.max_per_hour_per_account) = (relay, 100, 100);
        job
    };
    assert_eq!(
        w.process_one(from(POLICY, "a+1@partner.example")).await,
        Outcome::Sent { attempts: 1 }
    );
    for again in [
        "a+2@partner.example",
        "A+3@Partner.Example",
        "a@partner.example",
    ] {
        assert_eq!(
            w.process_one(from(POLICY, again)).await,
            Outcome::Suppressed(Suppression::AlreadyReplied),
            "{again}"
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The reply still goes to the address as sent.
    assert_eq!(seen.lock().unwrap()[0].1, ["<a+1@partner.example>"]);
    // The policy's delimiter.
    let dash = POLICY.replace("[domains]", "[domains]\nrecipient_delimiter = \"-\"");
    assert_eq!(
        from(&dash, "b-1@partner.example").key,
        from(&dash, "b-2@partner.example").key
    );
    assert_ne!(
        from(&dash, "b+1@partner.example").key,
        from(&dash, "b+2@partner.example").key
    );
    let off = POLICY.replace("[domains]", "[domains]\nrecipient_delimiter = \"\"");
    assert_eq!(
        from(&off, "b+1@partner.example").key,
        from(&off, "b+2@partner.example").key
    );
    // An untagged sender keeps the key earlier versions wrote.
    assert_eq!(
        from(POLICY, "a@partner.example").key,
        PairKey::new(&addr("gone@corp.example"), &addr("a@partner.example"))
    );
}

/// `{original_subject}` repeats a stranger's text to whoever the envelope sender names; by
/// default only to a sender a trusted `Authentication-Results` vouches for.
#[test]
fn the_original_subject_is_repeated_only_as_the_template_allows() {
    let subject_of = |template_line: &str, settings: &str, ar: Option<&str>| {
        let policy = POLICY
            .replace("original_subject = \"always\"\n", template_line)
            .replace("[autoreply]\n", &format!("[autoreply]\n{settings}"));
        let mut headers = vec![
            ("To", "gone@corp.example"),
            ("From", "ext@partner.example"),
            ("Subject", "Buy cheap pills"),
        ];
        headers.extend(ar.map(|v| ("Authentication-Results", v)));
        let m = message(
            &policy,
            Some("ext@partner.example"),
            &["gone@corp.example"],
            &headers,
        );
        let job = jobs(&m).remove(0).1.unwrap();
        let reply = job.draft.build().unwrap();
        let parsed = mail_parser::MessageParser::new()
            .parse(&reply.message)
            .unwrap();
        parsed.subject().unwrap_or_default().to_string()
    };
    let trusted = "authserv_id = [\"mx.corp.example\"]\nrequire_authenticated = false\n";
    let pass = Some("mx.corp.example; spf=pass smtp.mailfrom=ext@partner.example");
    let forged = Some("evil.example; spf=pass smtp.mailfrom=ext@partner.example");
    let full = "Gone Person has left: Buy cheap pills";
    let dropped = "Gone Person has left:";
    // The default: nothing to trust without authserv_id, so never.
    assert_eq!(subject_of("", "", pass), dropped);
    assert_eq!(subject_of("", trusted, None), dropped);
    assert_eq!(subject_of("", trusted, forged), dropped);
    assert_eq!(subject_of("", trusted, pass), full);
    let authenticated = "original_subject = \"authenticated\"\n";
    assert_eq!(subject_of(authenticated, trusted, pass), full);
    assert_eq!(subject_of(authenticated, trusted, forged), dropped);
    let always = "original_subject = \"always\"\n";
    assert_eq!(subject_of(always, "", None), full);
    let never = "original_subject = \"never\"\n";
    assert_eq!(subject_of(never, trusted, pass), dropped);
}

/// Naming the MTA whose results to trust turns `require_authenticated` on unless the policy
/// says otherwise.
#[test]
fn authserv_id_alone_requires_authentication() {
    let plan_for = |settings: &str| {
        let policy = POLICY.replace("[autoreply]\n", &format!("[autoreply]\n{settings}"));
        let m = message(
            &policy,
            Some("ext@partner.example"),
            &["gone@corp.example"],
            &[("To", "gone@corp.example")],
        );
        jobs(&m).remove(0).1.map(|_| ())
    };
    assert_eq!(plan_for(""), Ok(()));
    assert_eq!(
        plan_for("authserv_id = [\"mx.corp.example\"]\n"),
        Err(Suppression::Unauthenticated)
    );
    assert_eq!(
        plan_for("authserv_id = [\"mx.corp.example\"]\nrequire_authenticated = false\n"),
        Ok(())
    );
}

/// The forms a recipient was reached through come from its resolution's facts, not from its
/// trace: a message to an alias, written with a `+detail`, whose header names the alias is
/// answered the same with the `explain` steps gone.
#[test]
fn the_forms_addressed_do_not_depend_on_the_trace() {
    let mut m = message(
        POLICY,
        Some("ext@partner.example"),
        &["sales+news@corp.example"],
        &[("To", "Sales <sales@corp.example>")],
    );
    for r in &mut m.recipients {
        r.resolution.steps = engine::Steps::default();
    }
    let planned = jobs(&m);
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].0.as_str(), "gone@corp.example");
    assert!(planned[0].1.is_ok(), "{:?}", planned[0].1);
}
