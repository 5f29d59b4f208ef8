//! The export queue: finished spans go into a bounded channel; one thread of its own
//! batches them to the OTLP exporter.
//!
//! Why not the SDK's `BatchSpanProcessor`: it drops spans when its queue is full but
//! only logs that, it has no count to read, and the metric
//! (`astra_bus_trace_spans_dropped_total`) must say how many traces are incomplete. Here
//! every span that does not reach the collector goes through [`DropHook`]: the queue was
//! full ([`DropReason::QueueFull`]) or its export failed or timed out
//! ([`DropReason::ExportFailed`]).
//!
//! Why a thread with its own single-threaded Tokio runtime: a span ends wherever its
//! work ends (a handler's batch, an HTTP request), and `on_end` may only `try_send`, never
//! wait; the exporter's HTTP and gRPC clients need a Tokio reactor, and a slow or dead
//! collector must not take a worker of the daemon's runtime. `shutdown` blocks its
//! caller until the queue is flushed, which on the daemon's own runtime could deadlock a
//! current-thread runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use tokio::sync::mpsc;

use super::{Protocol, TelemetryError, TracingConfig};

/// Why spans were dropped (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The export queue was full (the collector is slower than the spans come).
    QueueFull,
    /// The export failed or timed out (the collector is down or refused them).
    ExportFailed,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
        }
    }
}

/// Told of every drop: why, and how many spans.
pub type DropHook = Arc<dyn Fn(DropReason, u64) + Send + Sync>;

/// Every span dropped in this process ([`super::dropped_total`]).
pub(super) static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans sent in one export request at most.
const MAX_BATCH: usize = 512;
/// A partial batch waits this long for company before it is exported.
const BATCH_DELAY: Duration = Duration::from_millis(500);

enum Control {
    /// Export everything queued, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Export everything queued, shut the exporter down, answer, and end the thread.
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

/// The span processor: a bounded queue in front of the export thread.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    drops: Drops,
    flush_wait: Duration,
}

#[derive(Clone)]
struct Drops(DropHook);

impl std::fmt::Debug for Drops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Drops")
    }
}

impl Drops {
    fn count(&self, reason: DropReason, n: u64) {
        if n > 0 {
            DROPPED.fetch_add(n, Ordering::Relaxed);
            (self.0)(reason, n);
        }
    }
}

impl QueueProcessor {
    /// Starts the export thread and builds the exporter on it (the gRPC channel binds to
    /// the runtime it is built on); an exporter that cannot be built is an error here.
    pub(super) fn start(
        cfg: &TracingConfig,
        resource: Resource,
        on_drop: DropHook,
    ) -> Result<QueueProcessor, TelemetryError> {
        let (spans, rx) = mpsc::channel(cfg.queue_size.max(1));
        let (control, crx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let drops = Drops(on_drop);
        let worker = Worker {
            endpoint: cfg.endpoint().to_string(),
            protocol: cfg.protocol,
            timeout: cfg.export_timeout,
            resource,
            drops: drops.clone(),
        };
        std::thread::Builder::new()
            .name("astra-otel-export".into())
            .spawn(move || worker.run(rx, crx, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(TelemetryError::Exporter(e)),
            Err(_) => return Err(TelemetryError::Exporter("export thread ended".into())),
        }
        Ok(QueueProcessor {
            spans,
            control,
            drops,
            flush_wait: cfg.export_timeout + Duration::from_secs(1),
        })
    }

    fn ask(
        &self,
        make: fn(std::sync::mpsc::SyncSender<()>) -> Control,
        wait: Duration,
    ) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.control
            .send(make(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        rx.recv_timeout(wait)
            .map_err(|_| OTelSdkError::Timeout(wait))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Never wait here: this runs where the traced work ends.
        if self.spans.try_send(span).is_err() {
            self.drops.count(DropReason::QueueFull, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, self.flush_wait)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout)
    }
}

struct Worker {
    endpoint: String,
    protocol: Protocol,
    timeout: Duration,
    resource: Resource,
    drops: Drops,
}

impl Worker {
    fn build(&self) -> Result<opentelemetry_otlp::SpanExporter, String> {
        let b = opentelemetry_otlp::SpanExporter::builder();
        let r = match self.protocol {
            Protocol::HttpProtobuf => b
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(self.endpoint.clone())
                .with_timeout(self.timeout)
                .build(),
            Protocol::Grpc => b
                .with_tonic()
                .with_endpoint(self.endpoint.clone())
                .with_timeout(self.timeout)
                .build(),
        };
        r.map_err(|e| e.to_string())
    }

    fn run(
        self,
        mut spans: mpsc::Receiver<SpanData>,
        mut control: mpsc::UnboundedReceiver<Control>,
        ready: std::sync::mpsc::SyncSender<Result<(), String>>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let mut exporter = match self.build() {
                Ok(e) => e,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            exporter.set_resource(&self.resource);
            let _ = ready.send(Ok(()));
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut tick = tokio::time::interval(BATCH_DELAY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    c = control.recv() => {
                        let done = match c {
                            Some(Control::Flush(done)) => Some((done, false)),
                            Some(Control::Shutdown(done)) => Some((done, true)),
                            None => None,
                        };
                        // What is queued gets one export attempt, all within one export
                        // timeout: with the collector down a flush must not take a
                        // timeout per batch (the daemon's shutdown waits for it).
                        let deadline = tokio::time::Instant::now() + self.timeout;
                        while let Ok(s) = spans.try_recv() {
                            batch.push(s);
                            if batch.len() >= MAX_BATCH {
                                self.export_by(&exporter, &mut batch, deadline).await;
                            }
                        }
                        self.export_by(&exporter, &mut batch, deadline).await;
                        match done {
                            Some((done, false)) => { let _ = done.send(()); }
                            Some((done, true)) => {
                                let _ = exporter.shutdown();
                                let _ = done.send(());
                                return;
                            }
                            None => return,
                        }
                    }
                    s = spans.recv() => match s {
                        Some(s) => {
                            batch.push(s);
                            if batch.len() >= MAX_BATCH {
                                self.export(&exporter, &mut batch).await;
                            }
                        }
                        // Every sender is gone: the provider was dropped without shutdown.
                        None => {
                            self.export(&exporter, &mut batch).await;
                            return;
                        }
                    },
                    _ = tick.tick() => self.export(&exporter, &mut batch).await,
                }
            }
        });
    }

    /// Exports `batch` (emptying it); a failure or a timeout counts its spans as dropped.
    /// The exporter retries transient failures with backoff inside the export timeout,
    /// so a dead collector costs at most one timeout per batch, on this thread only.
    async fn export(&self, exporter: &opentelemetry_otlp::SpanExporter, batch: &mut Vec<SpanData>) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.export_by(exporter, batch, deadline).await;
    }

    /// [`Worker::export`] giving up at `deadline` (spans past it count as dropped).
    async fn export_by(
        &self,
        exporter: &opentelemetry_otlp::SpanExporter,
        batch: &mut Vec<SpanData>,
        deadline: tokio::time::Instant,
    ) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
        let n = spans.len() as u64;
        match tokio::time::timeout_at(deadline, exporter.export(spans)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, spans = n, "span export failed");
                self.drops.count(DropReason::ExportFailed, n);
            }
            Err(_) => self.drops.count(DropReason::ExportFailed, n),
        }
    }
}
