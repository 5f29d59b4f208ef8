//! The spans astra-bus makes, after the OpenTelemetry messaging and HTTP semantic
//! conventions, and the W3C `traceparent` text form.
//!
//! | span | kind | made by | parent |
//! |---|---|---|---|
//! | `{METHOD} {route}` | SERVER | every edge request | the request's `traceparent` header |
//! | `publish {stream}` | PRODUCER | every event the edge publishes | the event's own `tp`, else the request span |
//! | `process {stream}` | CONSUMER | every (group, event) handled and committed | the event's `tp` (none: a root) |
//!
//! A derived event's `tp` is its `process` span's context, and a published event's `tp`
//! its `publish` span's, so a trade is one trace across every group it flows through. A
//! replayed dead letter starts a new trace that links to the one it was first handled in.
//!
//! Each constructor returns [`Traced::off`] without building anything while tracing is
//! off ([`super::enabled`]): the caller keeps the event's `tp` as it came.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{TARGET, enabled};

/// A span and the `traceparent` of its context (what events it produces carry).
#[derive(Debug, Clone)]
pub struct Traced {
    /// The span ([`Span::none`] when tracing is off); it ends when the last clone drops.
    pub span: Span,
    /// Its context as a W3C `traceparent`; `None` when tracing is off.
    pub tp: Option<String>,
}

impl Traced {
    /// Nothing traced.
    pub fn off() -> Traced {
        Traced {
            span: Span::none(),
            tp: None,
        }
    }

    /// Records the outcome (`astra.outcome`): `ok`, `duplicate`, `retry`, …; the
    /// outcomes of failure (`poison`, `failed`, `max_deliveries`) also mark the span as an
    /// error, with `detail` as the status description.
    pub fn outcome(&self, outcome: &'static str, detail: Option<&str>) {
        if self.tp.is_none() {
            return;
        }
        self.span.record("astra.outcome", outcome);
        if let Some(d) = detail {
            self.span.record("otel.status_code", "ERROR");
            self.span.record("otel.status_description", d);
        }
    }

    /// A dead letter: `reason` is its reason (`poison`, `failed`, `max_deliveries`,
    /// `malformed`).
    pub fn dead_lettered(&self, reason: &'static str, error: &str) {
        if self.tp.is_none() {
            return;
        }
        self.span.record("astra.dead_letter.reason", reason);
        self.outcome("dead_lettered", Some(error));
    }

    fn finish(span: Span, parent: Option<SpanContext>, link: Option<SpanContext>) -> Traced {
        if let Some(p) = parent {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(p));
        }
        if let Some(l) = link {
            span.add_link(l);
        }
        // Reading the context starts the OpenTelemetry span: parent and links are final.
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        let tp = sc.is_valid().then(|| format_traceparent(&sc));
        Traced { span, tp }
    }
}

/// The span of one (group, event): decoding, the handler's rounds and the commit. `tp`
/// is the event's `traceparent`: its parent, or for a `replayed` dead letter the span
/// its link points to (a replay is a new trace, started by an operator).
pub fn process(
    group: &str,
    stream: &str,
    event_id: &str,
    entry_id: &str,
    cid: &str,
    tp: Option<&str>,
    replayed: bool,
) -> Traced {
    if !enabled() {
        return Traced::off();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "process",
        otel.name = %format_args!("process {stream}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        otel.status_description = Empty,
        messaging.system = "redis",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = stream,
        messaging.consumer.group.name = group,
        messaging.message.id = event_id,
        messaging.message.conversation_id = cid,
        astra.cid = cid,
        astra.entry_id = entry_id,
        astra.replayed = replayed,
        astra.outcome = Empty,
        astra.dead_letter.reason = Empty,
    );
    let origin = tp.and_then(parse_traceparent);
    if replayed {
        Traced::finish(span, None, origin)
    } else {
        Traced::finish(span, origin, None)
    }
}

/// The span of one publish to `stream`. Its parent is `tp` (the event's own
/// `traceparent`) if given and valid, else the current span (the edge request's).
pub fn publish(stream: &str, event_id: &str, cid: &str, tp: Option<&str>) -> Traced {
    if !enabled() {
        return Traced::off();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "publish",
        otel.name = %format_args!("publish {stream}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        otel.status_description = Empty,
        messaging.system = "redis",
        messaging.operation.type = "publish",
        messaging.operation.name = "publish",
        messaging.destination.name = stream,
        messaging.message.id = event_id,
        messaging.message.conversation_id = cid,
        astra.cid = cid,
        astra.entry_id = Empty,
        astra.outcome = Empty,
    );
    Traced::finish(span, tp.and_then(parse_traceparent), None)
}

/// The span of one edge request (`route` is the route template, a fixed set).
pub fn request(method: &str, route: &str, cid: &str, tp: Option<&str>) -> Traced {
    if !enabled() {
        return Traced::off();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_description = Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        astra.cid = cid,
    );
    Traced::finish(span, tp.and_then(parse_traceparent), None)
}

/// Records a request's answer; a 5xx marks the span as an error.
pub fn answered(t: &Traced, status: u16) {
    if t.tp.is_none() {
        return;
    }
    t.span.record("http.response.status_code", status);
    if status >= 500 {
        t.span.record("otel.status_code", "ERROR");
    }
}

/// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`) as a remote context;
/// `None` for anything else (receivers ignore an invalid one).
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    let mut p = s.trim().split('-');
    let (version, trace, span, flags) = (p.next()?, p.next()?, p.next()?, p.next()?);
    // Version 00 has exactly four parts; a later version may append more.
    if version.len() != 2 || version == "ff" || (version == "00" && p.next().is_some()) {
        return None;
    }
    let lower_hex = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2)
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags & 1),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// The W3C `traceparent` of `sc` (version 00).
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).unwrap();
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(format_traceparent(&sc), tp);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            format_traceparent(&parse_traceparent(unsampled).unwrap()),
            unsampled
        );
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn off_builds_nothing() {
        // No provider installed in unit tests: every constructor is a no-op.
        let t = process(
            "g",
            "s",
            "e",
            "1-0",
            "c",
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            false,
        );
        assert!(t.tp.is_none() && t.span.is_none());
        assert!(publish("s", "e", "c", None).tp.is_none());
        assert!(request("GET", "/x", "c", None).span.is_none());
    }
}
