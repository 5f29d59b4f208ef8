//! The HTTP/1 connection loop, with the limits `axum::serve` does not have: a deadline for
//! a request's headers (`edge.header_timeout`: a client that trickles them is
//! disconnected), an idle limit for kept-alive connections (`edge.idle_timeout`), a cap on
//! open connections (`edge.max_connections`: beyond it the kernel's accept queue holds
//! them) and one per client address (`edge.max_connections_per_client`: beyond it a new
//! connection is closed at once), and bounded header buffers. Shutdown stops accepting and
//! lets in-flight requests finish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::Edge;
use crate::internal_events::RequestRateLimited;
use crate::shutdown::Shutdown;

/// Open connections per client address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a client; gives its slot back on drop.
struct Slot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(table: &Arc<PerClient>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut t = table.0.lock().expect("per-client table");
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().expect("per-client table");
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// A socket that remembers when it last moved a byte (for the idle limit).
struct Activity {
    inner: TcpStream,
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once the connection moved no byte for `idle`.
async fn idle(start: Instant, last_ms: Arc<AtomicU64>, idle: Duration) {
    loop {
        let last = Duration::from_millis(last_ms.load(Ordering::Relaxed));
        let quiet = start.elapsed().saturating_sub(last);
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// Serves `edge` on `listener` until `shutdown`; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    edge: Arc<Edge>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let cfg = edge.config.edge.clone();
    let router = super::router(edge.clone());
    let open = Arc::new(Semaphore::new(cfg.max_connections));
    let per_client = Arc::new(PerClient::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("connection semaphore"),
            _ = shutdown.recv() => break,
        };
        let (stream, peer): (TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "edge: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let Some(slot) = PerClient::take(&per_client, peer.ip(), cfg.max_connections_per_client)
        else {
            RequestRateLimited {
                limit: "connections",
            }
            .emit(&edge.metrics);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let start = Instant::now();
        let last_ms = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Activity {
            inner: stream,
            start,
            last_ms: last_ms.clone(),
        });
        let router = router.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = graceful.watch(http.serve_connection(io, svc));
        let idle_for = cfg.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "edge: connection ended");
                    }
                }
                _ = idle(start, last_ms, idle_for) => {
                    tracing::debug!(%peer, "edge: idle connection closed");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
