//! Database statements, seen through the event sqlx emits when each one finishes (target
//! `sqlx::query`, with its elapsed time and, past the slow-query threshold, a `slow_threshold`
//! field and a warning that quotes the statement): each is timed into the current service's
//! `swarm_db_query_duration_seconds`, counted in `swarm_db_slow_queries_total` when slow, and,
//! inside a traced request, exported as a `db.query` child span of that request.
//!
//! The current service is the task's [`Registry`] scope. SQLite runs statements on a thread of
//! its own that enters the caller's span instead, so the request layer also marks the request's
//! span with its registry, and a statement finds it through its span. [`crate::telemetry`]
//! installs this layer.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry_sdk::trace::Tracer;
use std::sync::Arc;
use tracing::field::{Field, Visit};

use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::{Registry, names};

/// The target of sqlx's statement events.
pub const TARGET: &str = "sqlx::query";

/// Measures and traces database statements from sqlx's statement events.
#[derive(Debug)]
pub struct QueryLayer {
    tracer: Tracer,
}

impl QueryLayer {
    /// Traces statements with `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        Self { tracer }
    }
}

/// What one statement event tells.
#[derive(Debug, Default)]
struct Statement {
    elapsed: Option<f64>,
    slow: bool,
    summary: String,
    text: String,
}

impl Visit for Statement {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed = Some(value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => value.clone_into(&mut self.summary),
            "db.statement" => value.trim().clone_into(&mut self.text),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, _: &dyn std::fmt::Debug) {
        if field.name() == "slow_threshold" {
            self.slow = true;
        }
    }
}

/// Tells whether the layer looks at `metadata`: statement events, and the spans that may
/// enclose them (a layer sees only the spans its filter lets through).
pub fn interested(metadata: &tracing::Metadata<'_>) -> bool {
    let enclosing = metadata.is_span()
        && (*metadata.level() <= tracing::Level::INFO || metadata.target() == SCOPE_TARGET);
    enclosing || metadata.target() == TARGET
}

/// The target of the spans that carry a registry through background work.
const SCOPE_TARGET: &str = "swarm_kit::metrics::scope";

/// Opens a span, seen by no log and no trace, that marks background work of `registry`'s
/// service, for the statements SQLite runs on its own thread.
pub(crate) fn scope_span(registry: &Arc<Registry>) -> tracing::Span {
    let span = tracing::debug_span!(target: SCOPE_TARGET, "metrics.scope");
    mark_span(&span, registry);
    span
}

/// The registry of the service whose request a span belongs to.
struct SpanScope(Arc<Registry>);

/// Marks `span`, if enabled, as work of `registry`'s service. A span marked already (a
/// request the gateway sends itself, inside the span of the one that made it) is marked anew.
pub(crate) fn mark_span(span: &tracing::Span, registry: &Arc<Registry>) {
    span.with_subscriber(|(id, dispatch)| {
        let span = dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .and_then(|spans| spans.span(id));
        if let Some(span) = span {
            span.extensions_mut()
                .replace(SpanScope(Arc::clone(registry)));
        }
    });
}

impl<S> tracing_subscriber::Layer<S> for QueryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut statement = Statement::default();
        event.record(&mut statement);
        let Some(elapsed) = statement.elapsed.map(Duration::from_secs_f64) else {
            return;
        };
        let registry = Registry::current().or_else(|| {
            ctx.event_scope(event)?.find_map(|span| {
                span.extensions()
                    .get::<SpanScope>()
                    .map(|scope| Arc::clone(&scope.0))
            })
        });
        if let Some(registry) = registry {
            registry
                .histogram(&names::DB_QUERY_DURATION, &[])
                .observe(elapsed);
            if statement.slow {
                registry.counter(&names::DB_SLOW_QUERIES, &[]).add(1.0);
            }
        }
        // Entering a span makes its OpenTelemetry context current; outside any traced work
        // (a background sweep, say) statements are measured but not traced.
        let parent = opentelemetry::Context::current();
        if parent.span().span_context().is_valid() {
            let end = SystemTime::now();
            let text = if statement.text.is_empty() {
                statement.summary.clone()
            } else {
                statement.text
            };
            let mut span = self
                .tracer
                .span_builder("db.query")
                .with_kind(SpanKind::Client)
                .with_start_time(end - elapsed)
                .with_attributes([
                    KeyValue::new("db.query.summary", statement.summary),
                    KeyValue::new("db.query.text", text),
                ])
                .start_with_context(&self.tracer, &parent);
            span.end_with_timestamp(end);
        }
    }
}
