//! Traces across processes: the span of each gRPC call (server and client, named as
//! OpenTelemetry's RPC conventions say), and the W3C trace context injected into the headers of
//! every outgoing gRPC call (by [`crate::replicas::Replicas`], from the call's client span),
//! extracted from incoming gRPC and HTTP headers to continue the caller's trace, and rendered as a
//! `traceparent` header for answers.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Puts `span`'s trace context into the headers of an outgoing call.
pub(crate) fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` continue the trace named by `headers` (`traceparent`), if any. Call it before
/// the span is entered.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    // Setting a parent only fails on a span already entered, which callers avoid.
    let _ = span.set_parent(parent);
}

/// Links `span` to the span that `traceparent` names, if it names one: for work done later on
/// behalf of a request, outside its trace.
pub fn link_to(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    span.add_link(context.span().span_context().clone());
}

/// Renders the `traceparent` header of `span`, when it belongs to a trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier.remove("traceparent")
}

/// Names a call to one of Swarm's own methods by its gRPC service and method
/// (`("swarm.tasks.v1.TaskService", "ClaimTasks")` for `/swarm.tasks.v1.TaskService/ClaimTasks`);
/// `None` for health checks, reflection and metric reports, which are neither traced nor
/// measured.
pub fn swarm_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let swarm = service.starts_with("swarm.") && path != "/swarm.metrics.v1.MetricsService/Record";
    swarm.then_some((service, method))
}

/// Opens the span of a call to `path` of `kind` (`server` or `client`), named and described as
/// OpenTelemetry's RPC conventions say; calls that are never traced (health checks,
/// reflection, metric reports) get none. A client span records its server and, on failure, the
/// status later.
pub(crate) fn rpc_span(path: &str, kind: &'static str) -> tracing::Span {
    let Some((service, method)) = swarm_method(path) else {
        return tracing::Span::none();
    };
    tracing::info_span!(
        "grpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = kind,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}
