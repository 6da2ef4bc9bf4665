//! The operators' HTTP endpoint (`[metrics] listen = "127.0.0.1:9100"`, feature `grpc`):
//!
//! - `GET /metrics`: every metric in the Prometheus text format (names in
//!   [`lockstep_core::runtime::metrics`]);
//! - `GET /health`: 200 `ok` while the node runs, 503 with the reason once it stopped
//!   (shutdown or fail-stop);
//! - `GET /ready`: 200 when a leader is known and the state machine trails the commit index
//!   by at most `ready_max_lag` entries, 503 saying which is not the case otherwise.
//!
//! The endpoint installs a Prometheus recorder for the `metrics` facade, once per process,
//! before the node registers its metrics; an application that wants the values elsewhere
//! installs its own recorder instead and leaves `[metrics]` out. A minimal HTTP/1.1 server:
//! one request per connection, the request head bounded to 8 KiB and 5 s, at most 64
//! connections at once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lockstep_core::runtime::Node;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::config::MetricsSection;

/// Largest request head read.
const MAX_REQUEST_BYTES: usize = 8 << 10;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Buckets of the duration histograms, in seconds: 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Buckets of `lockstep_log_sync_entries`.
const ENTRIES_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> Result<&'static PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("lockstep_log_sync_entries".into()),
                        ENTRIES_BUCKETS,
                    )
                })
                .and_then(|b| b.install_recorder())
                .map_err(|e| {
                    format!(
                        "[metrics]: cannot install the Prometheus recorder ({e}); \
                         an application with its own metrics recorder leaves [metrics] out"
                    )
                })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The running endpoint; stops when dropped.
pub struct HttpEndpoint {
    addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl HttpEndpoint {
    /// The address it serves on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `/metrics`, `/health` and `/ready` for `node` on `cfg.listen`.
pub async fn serve(node: Node, cfg: &MetricsSection) -> Result<HttpEndpoint, String> {
    let handle = prometheus()?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("[metrics] listen {}: {e}", cfg.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("[metrics] listen {}: {e}", cfg.listen))?;
    let max_lag = cfg.ready_max_lag;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = upkeep.tick() => handle.run_upkeep(),
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        continue; // dropped: too many connections at once
                    };
                    let node = node.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            answer(stream, &node, handle, max_lag),
                        )
                        .await;
                    });
                }
            }
        }
    });
    tracing::info!(%addr, "serving /metrics, /health and /ready");
    Ok(HttpEndpoint { addr, task })
}

/// Reads one request head and answers it.
async fn answer(
    mut stream: TcpStream,
    node: &Node,
    handle: &PrometheusHandle,
    max_lag: u64,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST_BYTES {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET is served\n").await;
    }
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let text = handle.render();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &text).await
        }
        "/health" => {
            let (code, body) = health(node);
            respond(&mut stream, code, "text/plain", &body).await
        }
        "/ready" => {
            let (code, body) = ready(node, max_lag);
            respond(&mut stream, code, "text/plain", &body).await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found: try /metrics, /health or /ready\n",
            )
            .await
        }
    }
}

/// `/health`: whether the node runs.
pub fn health(node: &Node) -> (u16, String) {
    match node.status().stopped {
        None => (200, "ok\n".into()),
        Some(why) => (503, format!("stopped: {why}\n")),
    }
}

/// `/ready`: whether the node can serve: running, a leader known, applied close to commit.
pub fn ready(node: &Node, max_lag: u64) -> (u16, String) {
    let s = node.status();
    if let Some(why) = s.stopped {
        return (503, format!("stopped: {why}\n"));
    }
    let Some(leader) = s.leader else {
        return (503, "no leader known\n".into());
    };
    let lag = s.commit.saturating_sub(s.applied);
    if lag > max_lag {
        return (
            503,
            format!(
                "applied {} trails commit {} by {lag} entries (ready_max_lag {max_lag})\n",
                s.applied, s.commit
            ),
        );
    }
    (
        200,
        format!(
            "ready: leader {leader}, commit {}, applied {}\n",
            s.commit, s.applied
        ),
    )
}

async fn respond(stream: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
