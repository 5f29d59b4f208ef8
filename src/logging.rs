//! Logs on stderr: human text, or one JSON object per line for journald/Loki/Elastic.
//!
//! The JSON lines are flat: `ts`, `level`, `target`, `message`, then the event's fields
//! and the fields of every enclosing span (a reader's `group` and `stream`), so a log
//! pipeline can filter on `group` without knowing which span set it. tracing-subscriber's
//! own JSON format nests span fields under `span`/`spans`, hence this formatter.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber: `format` is `text` or `json`; the filter comes from
/// `ASTRA_LOG` (default `info`). Under the log formatter sits
/// [`crate::telemetry::OtelSlot`], which exports spans once tracing is installed (and
/// does nothing before). A second call is a no-op.
pub fn init(format: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_env("ASTRA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // The spans made for OpenTelemetry are not log context: keeping them out of the log
    // formatter keeps every log line as it was (and their fields out of JSON lines).
    let filter = match format!("{}=off", crate::telemetry::TARGET).parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let otel = crate::telemetry::OtelSlot.with_filter(crate::telemetry::OtelSlot::filter());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(otel);
    let _ = if format == "json" {
        registry
            .with(
                fmt.with_ansi(false)
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        // Colours only for a person at a terminal, not for journald or a log file.
        registry
            .with(
                fmt.with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .try_init()
    };
}

/// The flat JSON-lines event format (see the module docs).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(ts));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        // Outermost span first, so inner spans and then the event itself win on a clash.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&f.fields)
                {
                    line.extend(fields);
                }
            }
        }
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        line.extend(fields.0);
        line.entry("message")
            .or_insert_with(|| Value::String(String::new()));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields as JSON values.
struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
