//! Logs and traces, set up once per process. Logs are readable text by default and one JSON
//! object per line when `SWARM_LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`).
//! Every span is also an OpenTelemetry span, so trace context flows across services (see
//! [`crate::trace`]); spans are exported over OTLP/gRPC in batches when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and kept nowhere otherwise.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

/// How long an export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The process's telemetry; [`Telemetry::flush`] and [`Telemetry::shutdown`] push out
/// buffered spans.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports every finished span now (blocking: call it from a blocking context).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            eprintln!("swarm: span flush failed: {error}");
        }
    }

    /// Exports what is left and stops exporting (blocking: call it from a blocking context).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("swarm: telemetry shutdown failed: {error}");
        }
    }
}

/// Installs the process-wide log and trace subscriber for `service` (the `service.name` of
/// exported spans). Later calls return the first installation, so `swarm up` and tests may call
/// it for every service they start. Must run inside a Tokio runtime when exporting.
pub fn init(service: &str) -> Telemetry {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty());
    init_with(service, endpoint)
}

/// Installs telemetry as [`init`] does, exporting to `endpoint` (an OTLP/gRPC URL) if given.
pub fn init_with(service: &str, endpoint: Option<String>) -> Telemetry {
    let provider = PROVIDER.get_or_init(|| install(service, endpoint)).clone();
    Telemetry { provider }
}

fn install(service: &str, endpoint: Option<String>) -> SdkTracerProvider {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    let mut export_error = None;
    if let Some(endpoint) = &endpoint {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => export_error = Some(error.to_string()),
        }
    }
    let provider = builder.build();
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("swarm"));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if std::env::var("SWARM_LOG_FORMAT").is_ok_and(|format| format == "json") {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed()
    };
    // An error only means a subscriber is installed already (a test harness's, say).
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
    match (endpoint, export_error) {
        (Some(endpoint), None) => tracing::info!(%endpoint, service, "exporting spans over otlp"),
        (Some(endpoint), Some(error)) => tracing::error!(%endpoint, %error, "cannot export spans"),
        (None, _) => {}
    }
    provider
}
