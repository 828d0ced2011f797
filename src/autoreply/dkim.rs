//! DKIM signatures (RFC 6376, RFC 8463) on the mail handoff writes itself: auto-replies leave
//! through a relay listener that runs no milter, so no other signer ever sees them, and a domain
//! that publishes DMARC `p=reject` would have its out-of-office replies refused.
//!
//! Pure: keys arrive as PEM text (the policy loader reads the files, `policy::load`), signing is
//! computation. Keys are kept per sending domain in lookup form (A-labels, lower case:
//! [`crate::address::domain_lookup_form`]), the same form as a reply's `From:` domain, so
//! `公司.中国`, `XN--55QX5D.xn--fiqs8s` and `xn--55qx5d.xn--fiqs8s` in the policy all sign mail
//! from `li@公司.中国`.
//!
//! Also here: what `handoff dkim keygen` writes (the key, its DNS record, the policy lines).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::policy::DkimAlgorithm;

/// The headers a signature covers (RFC 6376 section 5.4.1 recommends the ones that carry the
/// message's meaning). `From` is listed twice: the second, absent instance is signed as empty,
/// so a second `From:` added on the way breaks the signature (section 8.15, "oversigning").
const SIGNED_HEADERS: [&str; 13] = [
    "From",
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "X-Auto-Response-Suppress",
];

/// RSA key size `keygen` writes: 2048 bits, what RFC 8301 section 3.2 asks signers to use at
/// least, and what every DNS provider's TXT records still hold comfortably.
pub const RSA_BITS: usize = 2048;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key: {0}")]
    Pem(String),
    #[error("not a usable {algorithm} key: {cause}")]
    Key {
        algorithm: &'static str,
        cause: String,
    },
    #[error("cannot generate a {algorithm} key: {cause}")]
    Generate {
        algorithm: &'static str,
        cause: String,
    },
}

/// A key with its signature template (domain, selector, headers), built once at load.
enum Signer {
    Ed25519(DkimSigner<Ed25519Key, Done>),
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
}

/// One sending domain's key.
pub struct DomainKey {
    /// Lookup form.
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    signer: Signer,
    /// A digest of the PEM text, to tell a changed key file on reload.
    digest: u64,
}

impl DomainKey {
    /// Parses a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, what `keygen` writes for
    /// Ed25519 and what `openssl genpkey` writes) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(
        domain: &str,
        selector: &str,
        algorithm: DkimAlgorithm,
        pem: &[u8],
    ) -> Result<DomainKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        let bad = |cause: String| KeyError::Key {
            algorithm: algorithm.as_str(),
            cause,
        };
        // relaxed/relaxed (mail-auth's default): survives the re-folding and trailing-space
        // changes relays are allowed to make (RFC 6376 section 3.4).
        let signer = match (algorithm, der) {
            (DkimAlgorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(der)) => Signer::Ed25519(
                DkimSigner::from_key(
                    Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
                        .map_err(|e| bad(e.to_string()))?,
                )
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS),
            ),
            (DkimAlgorithm::Ed25519Sha256, _) => {
                return Err(bad(
                    "an Ed25519 key must be PKCS#8 (BEGIN PRIVATE KEY)".into()
                ));
            }
            (DkimAlgorithm::RsaSha256, der) => Signer::Rsa(
                DkimSigner::from_key(RsaKey::from_key_der(der).map_err(|e| bad(e.to_string()))?)
                    .domain(domain)
                    .selector(selector)
                    .headers(SIGNED_HEADERS),
            ),
        };
        Ok(DomainKey {
            domain: domain.to_string(),
            selector: selector.to_string(),
            algorithm,
            signer,
            digest: digest(pem),
        })
    }

    /// The `DKIM-Signature:` header for `message` (CRLF line ends), ending in CRLF.
    fn signature(&self, message: &[u8]) -> Result<String, mail_auth::Error> {
        Ok(match &self.signer {
            Signer::Ed25519(s) => s.sign(message)?.to_header(),
            Signer::Rsa(s) => s.sign(message)?.to_header(),
        })
    }
}

/// The keys of one policy, by sending domain. Cheap to clone.
#[derive(Clone, Default)]
pub struct Keys(Arc<HashMap<String, DomainKey>>);

impl Keys {
    pub fn new(keys: impl IntoIterator<Item = DomainKey>) -> Keys {
        Keys(Arc::new(
            keys.into_iter().map(|k| (k.domain.clone(), k)).collect(),
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key for mail from `domain` (lookup form, as [`crate::address::Address::domain`]).
    pub fn get(&self, domain: &str) -> Option<&DomainKey> {
        self.0.get(domain)
    }

    /// `message` with a `DKIM-Signature` header in front, when its sending domain has a key;
    /// `Ok(None)` when it has none.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Result<Option<Vec<u8>>, mail_auth::Error> {
        let Some(key) = self.get(domain) else {
            return Ok(None);
        };
        let header = key.signature(message)?;
        let mut out = Vec::with_capacity(header.len() + message.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(message);
        Ok(Some(out))
    }
}

/// Equal when the same domains have the same selectors, algorithms and key text: a reload that
/// finds only a key file changed still installs it.
impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().all(|(d, k)| {
                other.0.get(d).is_some_and(|o| {
                    o.selector == k.selector && o.algorithm == k.algorithm && o.digest == k.digest
                })
            })
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_list()
            .entries(
                self.0
                    .values()
                    .map(|k| format!("{}:{}:{}", k.domain, k.selector, k.algorithm.as_str())),
            )
            .finish()
    }
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A new key pair, as `keygen` writes it.
pub struct Generated {
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`), for both algorithms.
    pub private_pem: String,
    /// The `p=` value of the DNS record: the raw 32-byte public key for Ed25519 (RFC 8463
    /// section 4.2), the DER SubjectPublicKeyInfo for RSA (RFC 6376 section 3.6.1).
    pub public_b64: String,
}

/// Generates a key pair. Ed25519 with ring (what signs); RSA with the `rsa` crate, because
/// ring cannot generate RSA keys.
pub fn generate(algorithm: DkimAlgorithm) -> Result<Generated, KeyError> {
    use base64::Engine as _;
    let fail = |cause: String| KeyError::Generate {
        algorithm: algorithm.as_str(),
        cause,
    };
    let (der, public) = match algorithm {
        DkimAlgorithm::Ed25519Sha256 => {
            let der = Ed25519Key::generate_pkcs8().map_err(|e| fail(e.to_string()))?;
            let public = Ed25519Key::from_pkcs8_der(&der)
                .map_err(|e| fail(e.to_string()))?
                .public_key();
            (der, public)
        }
        DkimAlgorithm::RsaSha256 => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), RSA_BITS)
                .map_err(|e| fail(e.to_string()))?;
            let der = key.to_pkcs8_der().map_err(|e| fail(e.to_string()))?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| fail(e.to_string()))?;
            (der.as_bytes().to_vec(), public.as_bytes().to_vec())
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode(&der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    // RFC 7468 section 2: 64 characters a line (base64 is ASCII, so any cut is a char boundary).
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(Generated {
        private_pem: pem,
        public_b64: b64.encode(public),
    })
}

/// The record's text, `v=DKIM1; k=…; p=…` (RFC 6376 section 3.6.1, RFC 8463 section 4.2).
pub fn txt_value(algorithm: DkimAlgorithm, public_b64: &str) -> String {
    let k = match algorithm {
        DkimAlgorithm::Ed25519Sha256 => "ed25519",
        DkimAlgorithm::RsaSha256 => "rsa",
    };
    format!("v=DKIM1; k={k}; p={public_b64}")
}

/// The zone-file line to publish: `S._domainkey.D. IN TXT "…"`, the text split into strings of
/// at most 255 bytes (RFC 1035 section 3.3.14: a character-string's length is one octet; a
/// 2048-bit RSA key does not fit in one). Verifiers join the strings (RFC 6376 section 3.6.2.2).
/// The domain is written as A-labels: DNS names are.
pub fn dns_record(domain: &str, selector: &str, txt: &str) -> String {
    let strings: Vec<String> = txt
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let joined = if strings.len() == 1 {
        strings[0].clone()
    } else {
        format!("( {} )", strings.join(" "))
    };
    format!("{selector}._domainkey.{domain}. IN TXT {joined}")
}

/// The policy lines that enable the key.
pub fn policy_snippet(
    domain: &str,
    selector: &str,
    algorithm: DkimAlgorithm,
    key_file: &str,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        "[dkim.{}]\nselector = {}\nalgorithm = {}\nkey = {}\n",
        q(domain),
        q(selector),
        q(algorithm.as_str()),
        q(key_file)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey as PublicKey;

    /// A TXT cache for mail-auth's resolver: the published records, no network.
    pub(crate) struct Published(std::sync::Mutex<HashMap<Box<str>, mail_auth::Txt>>);

    impl mail_auth::ResolverCache<Box<str>, mail_auth::Txt> for Published {
        fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().get(name).cloned()
        }
        fn remove<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().remove(name)
        }
        fn insert(&self, key: Box<str>, value: mail_auth::Txt, _: std::time::Instant) {
            self.0.lock().unwrap().insert(key, value);
        }
    }

    /// mail-auth's verdict on `message`'s DKIM signatures, with `txt` published at
    /// `selector._domainkey.domain`.
    pub(crate) fn verify(message: &[u8], domain: &str, selector: &str, txt: &str) -> Vec<String> {
        let cache = Published(Default::default());
        let key = PublicKey::parse(txt.as_bytes()).unwrap();
        cache.0.lock().unwrap().insert(
            format!("{selector}._domainkey.{domain}.").into(),
            mail_auth::Txt::from(key),
        );
        let auth = mail_auth::MessageAuthenticator::new(
            mail_auth::hickory_resolver::config::ResolverConfig::default(),
            Default::default(),
        )
        .unwrap();
        let msg = mail_auth::AuthenticatedMessage::parse(message).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(auth.verify_dkim(mail_auth::Parameters::new(&msg).with_txt_cache(&cache)))
            .iter()
            .map(|o| format!("{:?}", o.result()))
            .collect()
    }

    fn message() -> Vec<u8> {
        b"From: Gone <gone@corp.example>\r\nTo: ext@partner.example\r\nSubject: away\r\n\
Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <r1@corp.example>\r\n\r\nGone.\r\n"
            .to_vec()
    }

    #[test]
    fn generated_keys_load_sign_and_publish_both_algorithms() {
        for alg in [DkimAlgorithm::Ed25519Sha256, DkimAlgorithm::RsaSha256] {
            let g = generate(alg).unwrap();
            let key =
                DomainKey::from_pem("corp.example", "s1", alg, g.private_pem.as_bytes()).unwrap();
            let keys = Keys::new([key]);
            let signed = keys.sign("corp.example", &message()).unwrap().unwrap();
            let text = String::from_utf8(signed).unwrap();
            assert!(text.starts_with("DKIM-Signature: "), "{text}");
            assert!(text.contains("d=corp.example"), "{text}");
            assert!(text.contains("s=s1"), "{text}");
            assert!(text.ends_with("\r\n\r\nGone.\r\n"));
            assert!(keys.sign("other.example", &message()).unwrap().is_none());
            let txt = txt_value(alg, &g.public_b64);
            assert_eq!(
                verify(text.as_bytes(), "corp.example", "s1", &txt),
                ["Pass"],
                "{}",
                alg.as_str()
            );
            // A changed body no longer verifies.
            let forged = text.replace("Gone.", "Come back.");
            assert_ne!(
                verify(forged.as_bytes(), "corp.example", "s1", &txt),
                ["Pass"]
            );
            // The record parses as a DKIM key record.
            let txt = txt_value(alg, &g.public_b64);
            assert!(PublicKey::parse(txt.as_bytes()).is_ok(), "{txt}");
            let record = dns_record("corp.example", "s1", &txt);
            assert!(record.starts_with("s1._domainkey.corp.example. IN TXT "));
            for s in record.split('"').skip(1).step_by(2) {
                assert!(s.len() <= 255, "{}", s.len());
            }
            let joined: String = record.split('"').skip(1).step_by(2).collect();
            assert_eq!(joined, txt);
        }
    }

    #[test]
    fn the_wrong_algorithm_or_garbage_is_refused() {
        let ed = generate(DkimAlgorithm::Ed25519Sha256).unwrap();
        let err = DomainKey::from_pem(
            "corp.example",
            "s1",
            DkimAlgorithm::RsaSha256,
            ed.private_pem.as_bytes(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("rsa-sha256"), "{err}");
        let err = DomainKey::from_pem("corp.example", "s1", DkimAlgorithm::Ed25519Sha256, b"hello")
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("not a PEM private key"),
            "{err}"
        );
    }

    #[test]
    fn keys_compare_by_their_text() {
        let g = generate(DkimAlgorithm::Ed25519Sha256).unwrap();
        let h = generate(DkimAlgorithm::Ed25519Sha256).unwrap();
        let k = |pem: &str| {
            Keys::new([DomainKey::from_pem(
                "corp.example",
                "s1",
                DkimAlgorithm::Ed25519Sha256,
                pem.as_bytes(),
            )
            .unwrap()])
        };
        assert_eq!(k(&g.private_pem), k(&g.private_pem));
        assert_ne!(k(&g.private_pem), k(&h.private_pem));
        assert_ne!(k(&g.private_pem), Keys::default());
        assert!(!format!("{:?}", k(&g.private_pem)).contains("BEGIN"));
    }

    #[test]
    fn snippet_is_toml_that_names_the_key() {
        let s = policy_snippet(
            "公司.中国",
            "s1",
            DkimAlgorithm::RsaSha256,
            "/etc/k \"x\".pem",
        );
        let v: toml::Value = toml::from_str(&s).unwrap();
        let d = &v["dkim"]["公司.中国"];
        assert_eq!(d["selector"].as_str(), Some("s1"));
        assert_eq!(d["algorithm"].as_str(), Some("rsa-sha256"));
        assert_eq!(d["key"].as_str(), Some("/etc/k \"x\".pem"));
    }
}
