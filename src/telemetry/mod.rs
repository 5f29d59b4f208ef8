//! Distributed tracing over OTLP: the spans of edge requests, publishes and each
//! (group, event) handled, exported to an OpenTelemetry collector. Off by default.
//!
//! - [`TracingConfig`]: the resolved `[tracing]` settings (the TOML and the `OTEL_*`
//!   environment are read by `config`, which sits above this module);
//! - [`install`]: builds the tracer provider and plugs it into the `tracing` subscriber,
//!   returning the [`Telemetry`] guard whose [`Telemetry::shutdown`] flushes it;
//! - [`spans`]: the span constructors the edge and the delivery engine call, and the W3C
//!   `traceparent` text form;
//! - [`export`]: the bounded export queue in front of the OTLP exporter, which counts
//!   what it drops instead of ever making a caller wait.
//!
//! Why a slot instead of a layer built once: the global subscriber is installed by
//! [`crate::logging::init`] before the configuration is read, and a daemon reload (or a
//! test running several daemons in one process) brings a new tracer. So
//! `logging` installs [`OtelSlot`], a layer that forwards to whichever OpenTelemetry
//! layer [`install`] put in it last, and does nothing while the slot is empty.
//!
//! The hot path pays nothing while tracing is off: every constructor in [`spans`] checks
//! [`enabled`] (one relaxed atomic load) before it builds a span or parses a
//! `traceparent`, and returns [`tracing::Span::none`].

use std::any::TypeId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::Registry;

pub mod export;
pub mod spans;

pub use export::{DropHook, DropReason};

/// The `tracing` target of every span meant for OpenTelemetry: the OTel layer sees only
/// these, and the log formatter never sees them.
pub const TARGET: &str = "astra_bus::otel";

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`POST …/v1/traces`), port 4318 by convention.
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC, port 4317 by convention.
    Grpc,
}

impl Protocol {
    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }

    /// Parses the `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            "grpc" => Some(Protocol::Grpc),
            _ => None,
        }
    }

    /// Where a local collector listens for this protocol.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http://localhost:4318/v1/traces",
            Protocol::Grpc => "http://localhost:4317",
        }
    }
}

/// Which traces are kept: `OTEL_TRACES_SAMPLER` in two fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Follow the caller's decision (the `traceparent` sampled flag) when there is one;
    /// only roots are sampled by `ratio`. The `parentbased_*` samplers.
    pub parent_based: bool,
    /// Fraction of (root) traces kept, 0.0 to 1.0.
    pub ratio: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

/// The resolved tracing settings (`[tracing]`, then the `OTEL_*` environment).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Export spans at all.
    pub enabled: bool,
    /// The traces endpoint: the full URL of `…/v1/traces` for HTTP, `http://host:port`
    /// for gRPC; `None` for the protocol's default ([`TracingConfig::endpoint`]).
    pub endpoint: Option<String>,
    /// The OTLP transport.
    pub protocol: Protocol,
    /// What is sampled.
    pub sampling: Sampling,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Finished spans waiting for export at most; beyond, new spans are dropped (and
    /// counted), never waited for.
    pub queue_size: usize,
    /// How long one export may take before its spans count as dropped.
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            endpoint: None,
            protocol: Protocol::HttpProtobuf,
            sampling: Sampling::default(),
            service_name: "astra-bus".into(),
            queue_size: 8192,
            export_timeout: Duration::from_secs(5),
        }
    }
}

impl TracingConfig {
    /// Where spans are sent: the configured endpoint or the protocol's default.
    pub fn endpoint(&self) -> &str {
        self.endpoint
            .as_deref()
            .unwrap_or(self.protocol.default_endpoint())
    }
}

/// Why tracing could not start (the daemon logs it and runs without traces).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (e.g. an endpoint it cannot use).
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
    /// The export thread could not be started.
    #[error("starting the span export thread: {0}")]
    Thread(#[from] std::io::Error),
    /// Another global `tracing` subscriber is installed, without [`OtelSlot`].
    #[error(
        "the global tracing subscriber has no astra-bus OpenTelemetry layer \
         (add astra_bus::telemetry::OtelSlot to it); spans are not exported"
    )]
    NoSlot,
}

/// On while an installed provider exports: the one check the hot path makes.
static ON: AtomicBool = AtomicBool::new(false);
/// Which [`install`] owns the slot, so an older daemon's shutdown does not clear a newer
/// one's tracer.
static GENERATION: AtomicU64 = AtomicU64::new(0);

type OtelLayer = tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>;

/// The current OpenTelemetry layer. Each is leaked on purpose: `downcast_raw` hands out
/// pointers into it that `tracing-opentelemetry` keeps using for spans still open, so it
/// must outlive them; it is one small struct per install (per reload).
static SLOT: RwLock<Option<(u64, &'static OtelLayer)>> = RwLock::new(None);

/// Whether spans are being exported. Everything in [`spans`] checks this first.
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

fn current() -> Option<&'static OtelLayer> {
    if !enabled() {
        return None;
    }
    SLOT.read().ok().and_then(|s| s.map(|(_, l)| l))
}

/// The layer [`crate::logging::init`] installs under the log formatter: it forwards span
/// callbacks to the installed OpenTelemetry layer, if any. Add it (with
/// [`OtelSlot::filter`]) to your own subscriber when embedding astra-bus with one.
#[derive(Debug, Default, Clone, Copy)]
pub struct OtelSlot;

impl OtelSlot {
    /// The per-layer filter that keeps [`OtelSlot`] to the spans of [`TARGET`]: other
    /// spans and every log event never reach it (their callsites stay disabled).
    pub fn filter() -> tracing_subscriber::filter::Targets {
        tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::TRACE)
    }
}

impl Layer<Registry> for OtelSlot {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, Registry>) {
        if let Some(l) = current() {
            l.on_new_span(attrs, id, ctx);
        }
    }
    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, Registry>) {
        if let Some(l) = current() {
            l.on_record(span, values, ctx);
        }
    }
    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, Registry>) {
        if let Some(l) = current() {
            l.on_follows_from(span, follows, ctx);
        }
    }
    fn on_enter(&self, id: &Id, ctx: Context<'_, Registry>) {
        if let Some(l) = current() {
            l.on_enter(id, ctx);
        }
    }
    fn on_exit(&self, id: &Id, ctx: Context<'_, Registry>) {
        if let Some(l) = current() {
            l.on_exit(id, ctx);
        }
    }
    fn on_close(&self, id: Id, ctx: Context<'_, Registry>) {
        // Even when off: a span opened before a shutdown still has its data to release.
        if let Some((_, l)) = SLOT.read().ok().and_then(|s| *s) {
            l.on_close(id, ctx);
        }
    }
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: the layer is leaked ('static), so the pointer it returns stays valid.
        current().and_then(|l| unsafe { l.downcast_raw(id) })
    }
}

/// A running tracer provider; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
    generation: u64,
    timeout: Duration,
}

impl Telemetry {
    /// Stops new spans, exports what is queued (waiting at most the export timeout), and
    /// ends the export thread. Blocks: call it from a blocking context.
    pub fn shutdown(self) {
        if let Ok(mut slot) = SLOT.write()
            && slot.is_some_and(|(g, _)| g == self.generation)
        {
            ON.store(false, Ordering::Relaxed);
            *slot = None;
        }
        if let Err(e) = self.provider.shutdown_with_timeout(self.timeout) {
            tracing::warn!(error = %e, "flushing the span exporter on shutdown failed");
        }
    }
}

/// Starts exporting per `cfg` (nothing when `cfg.enabled` is false: tracing stays off).
/// `instance` becomes `service.instance.id`; `on_drop` hears of every span dropped
/// (the daemon counts them in a metric). Replaces a tracer installed before.
pub fn install(
    cfg: &TracingConfig,
    instance: &str,
    on_drop: DropHook,
) -> Result<Option<Telemetry>, TelemetryError> {
    if !cfg.enabled {
        return Ok(None);
    }
    ensure_subscriber()?;
    let resource = Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_string()),
        ])
        .build();
    let processor = export::QueueProcessor::start(cfg, resource.clone(), on_drop)?;
    let ratio = Sampler::TraceIdRatioBased(cfg.sampling.ratio);
    let sampler = if cfg.sampling.parent_based {
        Sampler::ParentBased(Box::new(ratio))
    } else {
        ratio
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let layer: OtelLayer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("astra-bus"))
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false);
    let layer: &'static OtelLayer = Box::leak(Box::new(layer));
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    if let Ok(mut slot) = SLOT.write() {
        *slot = Some((generation, layer));
        ON.store(true, Ordering::Relaxed);
    }
    Ok(Some(Telemetry {
        provider,
        generation,
        timeout: cfg.export_timeout + Duration::from_secs(1),
    }))
}

/// Makes sure spans reach [`OtelSlot`]: installs a subscriber holding just the slot when
/// none is installed (a library user or a test that never called `logging::init`).
fn ensure_subscriber() -> Result<(), TelemetryError> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(OtelSlot.with_filter(OtelSlot::filter()))
        .try_init();
    if tracing::dispatcher::get_default(|d| d.is::<OtelSlot>()) {
        Ok(())
    } else {
        Err(TelemetryError::NoSlot)
    }
}

/// Spans dropped since the process started (every reason); what the metric counts too.
pub fn dropped_total() -> u64 {
    export::DROPPED.load(Ordering::Relaxed)
}

/// A hook that ignores drops (for callers without metrics).
pub fn ignore_drops() -> DropHook {
    Arc::new(|_, _| {})
}
