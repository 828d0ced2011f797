//! IMAP over TLS, as `handoff archive import` reads mailboxes and `handoff archive restore`
//! appends to them: [`proto`] is the protocol without I/O, [`client`] a blocking connection
//! (rustls over a `TcpStream`: the importer is synchronous, one account at a time).
//!
//! Passwords are [`Secret`]s: they print as `<password>` and are only ever written to the
//! server, inside a TLS session.

pub mod client;
pub mod proto;

pub use client::{Client, Connect, ImapError, Mailbox};

/// A password: never shown (its `Debug` is a placeholder), compared only to tell rows apart.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The password, to send to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<password>")
    }
}

/// Where an IMAP server is: `host`, `host:port`, `[v6]:port`; port 993 (IMAP over TLS, RFC
/// 8314) when none is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

impl Server {
    pub fn parse(s: &str) -> Result<Server, String> {
        let bad = || format!("`{s}` is not a host or host:port");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad()),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (s, None),
            }
        };
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
            return Err(bad());
        }
        let port = match port {
            Some(p) => p.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?,
            None => 993,
        };
        Ok(Server {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        let s = Server::parse("imap.corp.example").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("imap.corp.example", 993));
        let s = Server::parse("127.0.0.1:10993").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 10993));
        let s = Server::parse("[::1]:143").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.to_string()),
            ("::1", 143, "[::1]:143".into())
        );
        for bad in ["", "h:0", "h:x", "a b", "[::1", "h:99999"] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<password>");
    }
}
