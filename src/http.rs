//! The monitoring endpoint (`[http]`, off unless a port is set): `GET /health` (200 when the index
//! database answers, else 503) and `GET /metrics` (Prometheus text: this process's counters and the
//! database's series / jobs / outbox counts). Plain HTTP/1.1, one request per connection, read with a
//! time and size limit; nothing else is served.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

use segnode_db::Index;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}: {source}")]
pub struct HttpError {
    addr: String,
    source: std::io::Error,
}

/// Bind the endpoint (so a taken port stops the start with a clear error); serve it until shutdown.
pub async fn bind(bind: &str, port: u16) -> Result<TcpListener, HttpError> {
    let addr = format!("{bind}:{port}");
    TcpListener::bind(&addr)
        .await
        .map_err(|source| HttpError { addr, source })
}

pub async fn serve(
    listener: TcpListener,
    index: Index,
    node: String,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "monitoring endpoint: /health, /metrics");
    }
    let node = Arc::new(node);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let (index, node) = (index.clone(), node.clone());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            answer(socket, &index, &node),
                        )
                        .await;
                    });
                }
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn answer(mut socket: TcpStream, index: &Index, node: &str) -> std::io::Result<()> {
    // the request head only (no bodies are accepted): up to 8 KiB or the blank line
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            return respond(&mut socket, 431, "text/plain", "request head too large\n").await;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut socket, 405, "text/plain", "only GET\n").await;
    }
    match path.split('?').next().unwrap_or("") {
        "/health" => {
            if !index.unavailable() && index.ping(Duration::from_secs(2)).await {
                respond(&mut socket, 200, "text/plain", "ok\n").await
            } else {
                respond(
                    &mut socket,
                    503,
                    "text/plain",
                    "index database unavailable\n",
                )
                .await
            }
        }
        "/metrics" => {
            let states = if index.unavailable() {
                None
            } else {
                tokio::time::timeout(Duration::from_secs(3), index.state_counts())
                    .await
                    .ok()
                    .and_then(Result::ok)
            };
            let text = crate::metrics::metrics().render(node, states.as_ref());
            respond(&mut socket, 200, "text/plain; version=0.0.4", &text).await
        }
        _ => {
            respond(
                &mut socket,
                404,
                "text/plain",
                "not found: /health, /metrics\n",
            )
            .await
        }
    }
}

async fn respond(socket: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(msg.as_bytes()).await?;
    socket.shutdown().await
}
