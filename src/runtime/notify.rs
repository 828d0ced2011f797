//! systemd's readiness protocol (sd_notify(3)), without libsystemd: one datagram per state
//! change, sent to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Without that variable (handoff not started by systemd with
//! `Type=notify`) every call does nothing.
//!
//! `READY=1` once the listeners are bound, `RELOADING=1` while a reload is built (then `READY=1`
//! again), `STOPPING=1` when shutdown starts. A failed send is logged at debug level only: the
//! service manager, not mail, is what misses out.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The listeners are bound and the policy loaded: mail can flow.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// A reload is being built; the running policy keeps serving meanwhile.
pub fn reloading() {
    send("RELOADING=1\nSTATUS=reloading the policy");
}

/// Shutdown started: messages in flight finish, nothing new is accepted.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}

fn send(message: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send_to(&target.to_string_lossy(), message) {
        tracing::debug!("sd_notify to {}: {e}", target.to_string_lossy());
    }
}

fn send_to(target: &str, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(message.as_bytes(), target)?;
        }
    }
    Ok(())
}

/// sd_notify fields are newline-separated: a status must stay on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(&path.to_string_lossy(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("handoff-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }
}
