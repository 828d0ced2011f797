//! DKIM signing of auto-replies, end to end: keys made by `handoff dkim keygen`, its policy lines
//! pasted into the policy as printed, a private Postfix whose smtpd runs handoff as its milter
//! (or, in content-filter mode, hands it the queued mail) and whose relay listener (no milters)
//! takes the replies to the lab's sink; mail-auth checks
//! each reply against the record keygen printed, given to its resolver through its TXT cache
//! (no network). Also: `check` naming the line of a bad key, and a reload picking up a new key.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, MessageAuthenticator, Parameters, ResolverCache, Txt};

use crate::daemon::{Daemon, free_port, wait_for};
use crate::e2e_autoreply::relay_entry;
use crate::e2e_milter::milter_lines;
use crate::support::{Delivered, Lab, LabConfig, send};

const TIMEOUT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
[relay]
address = "127.0.0.1:{relay}"

[domains]
local = ["corp.example", "rsa.example", "plain.example"]

[templates.departed]
subject = "{{name}} has left"
body = "Please write to {{successor}}.\n"

[accounts."gone@corp.example"]
state = "departed"
name = "Gone Ed"
successor = "cs@corp.example"
autoreply = "departed"

[accounts."gone@rsa.example"]
state = "departed"
name = "Gone Rsa"
successor = "cs@corp.example"
autoreply = "departed"

[accounts."gone@plain.example"]
state = "departed"
name = "Gone Plain"
successor = "cs@corp.example"
autoreply = "departed"
"#;

/// What `handoff dkim keygen` printed, taken apart as an admin would copy it.
struct Keygen {
    /// The TXT record's text, its strings joined (RFC 6376 section 3.6.2.2).
    txt: String,
    /// The zone-file line.
    record: String,
    /// The policy lines, exactly as printed.
    snippet: String,
}

fn keygen(domain: &str, selector: &str, algorithm: &str, out: &Path) -> Keygen {
    let o = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["dkim", "keygen", "--domain", domain, "--selector", selector])
        .args(["--algorithm", algorithm, "--out"])
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let record = stdout
        .lines()
        .find(|l| l.contains("._domainkey."))
        .unwrap_or_else(|| panic!("no DNS record in {stdout}"))
        .to_string();
    let txt: String = record.split('"').skip(1).step_by(2).collect();
    let snippet = stdout[stdout.find("[dkim.").expect("policy lines")..].to_string();
    Keygen {
        txt,
        record,
        snippet,
    }
}

/// A TXT cache for mail-auth's resolver: the published records, no network.
#[derive(Default)]
struct Published(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for Published {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

impl Published {
    fn publish(&self, name: &str, txt: &str) {
        let key = DomainKey::parse(txt.as_bytes()).unwrap();
        self.insert(
            format!("{name}.").into(),
            Txt::from(key),
            std::time::Instant::now(),
        );
    }
}

/// mail-auth's results for every DKIM signature of `message`, e.g. `["Pass"]`.
fn verify(message: &[u8], published: &Published) -> Vec<String> {
    let auth = MessageAuthenticator::new(
        mail_auth::hickory_resolver::config::ResolverConfig::default(),
        Default::default(),
    )
    .unwrap();
    let msg = AuthenticatedMessage::parse(message).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(auth.verify_dkim(Parameters::new(&msg).with_txt_cache(published)))
        .iter()
        .map(|o| format!("{:?}", o.result()))
        .collect()
}

fn reply_from(lab: &Lab, from: &str) -> Delivered {
    wait_for(TIMEOUT, &format!("the auto-reply from {from}"), || {
        lab.sink()
            .all()
            .into_iter()
            .find(|d| d.mail_from.is_empty() && d.header("From").is_some_and(|f| f.contains(from)))
    })
}

/// The journal's `created` records (what handoff sent), whole.
fn journaled(d: &Daemon) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    handoff::journal::reader::for_each_record(&d.journal_dir(), |info, file| {
        if info.header.kind == handoff::journal::Kind::Created {
            out.push(handoff::journal::segment::read_body(file, info)?);
        }
        Ok(())
    })
    .unwrap();
    out
}

/// Milter mode: handoff in smtpd, the replies through a relay listener with no milters.
#[test]
fn auto_replies_arrive_dkim_signed_for_both_algorithms() {
    signed_replies(false);
}

/// Content-filter mode: handoff after the queue; its next hop and its relay are the same
/// reinjection listener, as deploy/postfix/master.cf.content-filter has it.
#[test]
fn auto_replies_arrive_dkim_signed_in_content_filter_mode() {
    signed_replies(true);
}

fn signed_replies(content_filter: bool) {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(
        "corp.example",
        "ed1",
        "ed25519",
        &keys.path().join("ed.pem"),
    );
    let rsa = keygen("RSA.Example", "rsa1", "rsa", &keys.path().join("rsa.pem"));
    assert!(
        ed.record
            .starts_with("ed1._domainkey.corp.example. IN TXT \"v=DKIM1; k=ed25519; p="),
        "{}",
        ed.record
    );
    // A 2048-bit RSA key needs more than one 255-byte string.
    assert!(rsa.record.matches('"').count() >= 4, "{}", rsa.record);
    assert!(rsa.txt.starts_with("v=DKIM1; k=rsa; p="), "{}", rsa.txt);

    let relay = free_port();
    let policy = POLICY
        .replace("{relay}", &relay.to_string())
        .replace("{{", "{")
        .replace("}}", "}")
        + "\n"
        + &ed.snippet
        + "\n"
        + &rsa.snippet;
    let (daemon, lab) = if content_filter {
        let daemon = Daemon::start_content_filter(&policy, &format!("127.0.0.1:{relay}"));
        let lmtp = daemon.lmtp_port.expect("an LMTP listener");
        let lab = Lab::start(LabConfig::default().content_filter(lmtp, relay));
        (daemon, lab)
    } else {
        let daemon = Daemon::start(&policy);
        let mut config = LabConfig::default().master_cf_entry(relay_entry(relay));
        for line in milter_lines(daemon.milter_port) {
            config = config.main_cf_line(line);
        }
        let lab = Lab::start(config);
        (daemon, lab)
    };

    for to in [
        "gone@corp.example",
        "gone@rsa.example",
        "gone@plain.example",
    ] {
        let t = send(
            &lab,
            "sender@example.net",
            &[to],
            format!("From: sender@example.net\r\nTo: {to}\r\nSubject: hi\r\n\r\nHello.\r\n"),
        );
        assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    }
    let published = Published::default();
    published.publish("ed1._domainkey.corp.example", &ed.txt);
    published.publish("rsa1._domainkey.rsa.example", &rsa.txt);

    for (from, algorithm, selector) in [
        ("gone@corp.example", "ed25519-sha256", "ed1"),
        ("gone@rsa.example", "rsa-sha256", "rsa1"),
    ] {
        let reply = reply_from(&lab, from);
        let sig = reply.header("DKIM-Signature").expect("a DKIM-Signature");
        assert!(sig.contains(&format!("a={algorithm}")), "{sig}");
        assert!(sig.contains(&format!("s={selector}")), "{sig}");
        assert_eq!(
            verify(&reply.data, &published),
            ["Pass"],
            "{}",
            reply.text()
        );
        // Checked against another key, it fails: the pass above is the key's doing.
        let wrong = Published::default();
        let other = if selector == "ed1" { &rsa.txt } else { &ed.txt };
        wrong.publish(&format!("{selector}._domainkey.{}", &from[5..]), other);
        assert_ne!(verify(&reply.data, &wrong), ["Pass"]);
    }
    // A domain without a key: sent as before, unsigned.
    let plain = reply_from(&lab, "gone@plain.example");
    assert_eq!(plain.header("DKIM-Signature"), None);

    // The journal keeps exactly what left: the signed reply, byte for byte (Postfix only
    // prepended its Received line).
    let records = journaled(&daemon);
    assert_eq!(records.len(), 3);
    for from in ["gone@corp.example", "gone@rsa.example"] {
        let reply = reply_from(&lab, from);
        let text = reply.text();
        let record = records
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .find(|r| r.contains(&format!("<{from}>")))
            .unwrap();
        assert!(record.starts_with("DKIM-Signature: "), "{record}");
        // (The sink keeps the CRLF that ends DATA with the message.)
        assert!(
            text.trim_end().ends_with(record.trim_end()),
            "delivered:\n{text}\njournaled:\n{record}"
        );
    }
}

/// `check` reports each bad key (missing, readable by others, not a key, the wrong algorithm)
/// at the policy line that names it, all at once; fixed, the policy checks.
#[test]
fn check_names_the_line_of_each_bad_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let good = keygen(
        "corp.example",
        "s1",
        "ed25519",
        &dir.path().join("good.pem"),
    );
    let open = dir.path().join("open.pem");
    std::fs::copy(dir.path().join("good.pem"), &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o640)).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    let policy = format!(
        "[domains]\nlocal = [\"corp.example\"]\n\
         [dkim.\"a.example\"]\nselector = \"s1\"\nalgorithm = \"ed25519-sha256\"\nkey = \"missing.pem\"\n\
         [dkim.\"b.example\"]\nselector = \"s1\"\nalgorithm = \"ed25519-sha256\"\nkey = \"open.pem\"\n\
         [dkim.\"c.example\"]\nselector = \"s1\"\nalgorithm = \"ed25519-sha256\"\nkey = \"garbage.pem\"\n\
         [dkim.\"d.example\"]\nselector = \"s1\"\nalgorithm = \"rsa-sha256\"\nkey = \"good.pem\"\n\
         {}",
        good.snippet
    );
    let path = dir.path().join("handoff.toml");
    std::fs::write(&path, &policy).unwrap();
    let check = || {
        let o = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, out) = check();
    assert_eq!(code, Some(1), "{out}");
    let p = path.display();
    for (line, what) in [
        (6, "missing.pem: cannot read it: No such file"),
        (10, "open.pem: mode 0640 lets other users read it"),
        (14, "garbage.pem: not a PEM private key"),
        (18, "good.pem: not a usable rsa-sha256 key"),
    ] {
        let want = format!("{p}:{line}:7: DKIM key ");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&want) && l.contains(what)),
            "no `{want}…{what}` in:\n{out}"
        );
    }
    assert!(out.contains("4 errors"), "{out}");
    // Only the key the snippet names is left: the policy checks.
    let fixed = policy[..policy.find("[dkim.\"a.example\"]").unwrap()].to_string() + &good.snippet;
    std::fs::write(&path, fixed).unwrap();
    let (code, out) = check();
    assert_eq!(code, Some(0), "{out}");
}

/// A reload re-reads the key files: a key replaced under an unchanged policy is installed, and
/// the domain matches in any form (U-labels in the policy, A-labels in the From).
#[test]
fn a_reload_picks_up_a_replaced_key() {
    use handoff::runtime::reload::{Outcome, reload_once};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let first = keygen("公司.中国", "s1", "ed25519", &key);
    let policy = "[domains]\nlocal = [\"公司.中国\"]\n[storage]\njournal = \"j\"\nstate = \"s\"\n\
         [dkim.\"公司.中国\"]\nselector = \"s1\"\nalgorithm = \"ed25519-sha256\"\nkey = \"k.pem\"\n";
    assert!(
        first.snippet.contains("xn--55qx5d.xn--fiqs8s"),
        "{}",
        first.snippet
    );
    let path = dir.path().join("handoff.toml");
    std::fs::write(&path, policy).unwrap();
    let store = handoff::runtime::store::PolicyStore::new(handoff::policy::load(&path).unwrap());
    let sign = |store: &handoff::runtime::store::PolicyStore| {
        let msg = b"From: li@xn--55qx5d.xn--fiqs8s\r\nTo: x@y.example\r\nSubject: s\r\n\r\nhi\r\n";
        store
            .snapshot()
            .policy
            .dkim
            .sign("xn--55qx5d.xn--fiqs8s", msg)
            .unwrap()
            .expect("signed")
    };
    let published = Published::default();
    published.publish("s1._domainkey.xn--55qx5d.xn--fiqs8s", &first.txt);
    assert_eq!(verify(&sign(&store), &published), ["Pass"]);
    assert!(matches!(reload_once(&path, &store), Outcome::Unchanged));

    // A new key in the same file, the policy untouched.
    std::fs::remove_file(&key).unwrap();
    let second = keygen("公司.中国", "s1", "ed25519", &key);
    assert!(matches!(
        reload_once(&path, &store),
        Outcome::Applied { .. }
    ));
    let renewed = Published::default();
    renewed.publish("s1._domainkey.xn--55qx5d.xn--fiqs8s", &second.txt);
    let signed = sign(&store);
    assert_eq!(verify(&signed, &renewed), ["Pass"]);
    assert_ne!(verify(&signed, &published), ["Pass"]);
}
