//! The operator endpoint: `/metrics` (Prometheus text format), `/healthz` (the process is up),
//! `/readyz` (able to serve mail) and `/status` (JSON for `handoff status`). A deliberately small HTTP/1.1 server: one request per
//! connection, a bounded request head, a read timeout, no keep-alive.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Reports whether handoff can serve mail, and if not, why.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Builds the `/status` JSON document.
pub type StatusReport = Arc<dyn Fn() -> String + Send + Sync>;

/// What the endpoint serves.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: PrometheusHandle,
    pub ready: ReadyCheck,
    pub status: StatusReport,
}

const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request, and to take the answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. Scrapes, probes and `handoff status` need a handful; each
/// connection holds a file descriptor and a task for up to [`READ_TIMEOUT`]. At the cap the
/// oldest connection is closed to make room (a client that already sent its request has its
/// answer within milliseconds), so idle or slow clients cannot lock a probe out, nor use up the
/// process's descriptors, which the mail listeners and the journal need.
pub const MAX_CONNECTIONS: usize = 64;

/// The open connections, oldest first: dropping a sender closes its connection.
type Open = Arc<Mutex<VecDeque<(u64, oneshot::Sender<()>)>>>;

/// Serves the endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let open: Open = Arc::default();
    for id in 0u64.. {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (closed_tx, closed_rx) = oneshot::channel();
        {
            // The lock guards one queue edit; a panic elsewhere cannot leave it half done.
            let mut q = open.lock().unwrap_or_else(PoisonError::into_inner);
            while q.len() >= MAX_CONNECTIONS {
                // Dropping the sender closes the oldest connection.
                q.pop_front();
            }
            q.push_back((id, closed_tx));
        }
        let endpoints = endpoints.clone();
        let open = open.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = closed_rx => tracing::debug!("metrics connection closed to make room"),
                r = answer(stream, &endpoints) => if let Err(e) = r {
                    tracing::debug!("metrics connection: {e}");
                },
            }
            let mut q = open.lock().unwrap_or_else(PoisonError::into_inner);
            q.retain(|(i, _)| *i != id);
        });
    }
}

async fn answer(mut stream: TcpStream, endpoints: &Endpoints) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let (status, content_type, body) = match complete {
        // Building the status document reads the journal directory (a `stat` per segment):
        // blocking work, kept off the async workers that serve mail.
        Ok(Ok(true)) if request_line(&head) == ("GET", "/status") => {
            let report = endpoints.status.clone();
            match tokio::task::spawn_blocking(move || report()).await {
                Ok(body) => ("200 OK", "application/json", body),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "status failed\n".to_string(),
                ),
            }
        }
        Ok(Ok(true)) => route(&head, endpoints),
        Ok(Ok(false)) => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
        Ok(Err(e)) => return Err(e),
        Err(_) => ("408 Request Timeout", "text/plain", "timeout\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that does not take its answer is dropped like one that does not ask.
    tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// The method and path (without query) of the request line.
fn request_line(head: &[u8]) -> (&str, &str) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or("");
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    (method, target.split('?').next().unwrap_or(target))
}

fn route(head: &[u8], endpoints: &Endpoints) -> (&'static str, &'static str, String) {
    let (method, path) = request_line(head);
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "text/plain", "only GET\n".into());
    }
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            endpoints.metrics.render(),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/status" => ("200 OK", "application/json", (endpoints.status)()),
        "/readyz" => match (endpoints.ready)() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".into()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz, /readyz or /status\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// A slow `/status` (a journal of many segments) does not hold the async worker: on a
    /// one-thread runtime, `/healthz` is answered while it is being built.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_status_does_not_block_other_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Endpoints {
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            ready: Arc::new(|| Ok(())),
            status: Arc::new(|| {
                std::thread::sleep(Duration::from_secs(2));
                "{}".to_string()
            }),
        };
        tokio::spawn(serve(listener, endpoints, std::future::pending()));
        let start = Instant::now();
        let slow = tokio::spawn(get(addr, "/status"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let health = get(addr, "/healthz").await;
        let took = start.elapsed();
        assert!(health.ends_with("ok\n"), "{health}");
        assert!(took < Duration::from_secs(1), "/healthz waited {took:?}");
        assert!(slow.await.unwrap().ends_with("{}"));
    }
}
