//! Logs and traces, set up once per process. Logs are readable text by default and one JSON
//! object per line when `SWARM_LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`).
//! JSON lines carry the `trace_id` and `span_id` of the span they were logged in. Every span is
//! also an OpenTelemetry span, so trace context flows across services (see [`crate::trace`]);
//! database statements become child spans (see [`crate::metrics::db`]). Spans are exported in
//! batches over OTLP (gRPC or http/protobuf, per `OTEL_EXPORTER_OTLP_PROTOCOL`) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (or the traces signal's own variables), and kept nowhere
//! otherwise. Spans follow OpenTelemetry's conventions: server and client kinds, `rpc.*`,
//! `http.*` and `db.*` attributes, and a resource naming the service, its version and instance.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::{ConfigError, env_value};
use crate::metrics::db::QueryLayer;

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

/// Where spans are exported, and over which OTLP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Where spans go: the collector's base URL for gRPC (`http://127.0.0.1:4317`), the full
    /// URL of its traces path for http/protobuf (`http://127.0.0.1:4318/v1/traces`).
    pub endpoint: String,
    /// How spans travel.
    pub protocol: Protocol,
    /// The authority (a PEM file) an `https` collector's certificate must chain to; unset, the
    /// system's trusted authorities.
    pub certificate: Option<std::path::PathBuf>,
}

/// An OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (`grpc`).
    Grpc,
    /// Protobuf messages POSTed over HTTP to `<endpoint>/v1/traces` (`http/protobuf`).
    HttpProtobuf,
}

impl Export {
    /// Reads the standard variables, the traces signal's own first:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as given) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (with `/v1/traces` added for http/protobuf), and `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, the default, or `http/protobuf`), and for an
    /// `https` collector (over grpc) `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`; `None` when no endpoint is set. Headers (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TRACES_HEADERS`) are read
    /// by the exporter itself.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_variables(env_value::<String>)
    }

    /// Reads the settings [`Export::from_env`] reads, from `variable`.
    fn from_variables(
        variable: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Option<Self>, ConfigError> {
        let first =
            |names: [&'static str; 2]| -> Result<Option<(&'static str, String)>, ConfigError> {
                for name in names {
                    if let Some(value) = variable(name)? {
                        return Ok(Some((name, value)));
                    }
                }
                Ok(None)
            };
        let Some((endpoint_variable, endpoint)) = first([
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ])?
        else {
            return Ok(None);
        };
        let protocol = match first([
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ])? {
            None => Protocol::Grpc,
            Some((_, protocol)) if protocol == "grpc" => Protocol::Grpc,
            Some((_, protocol)) if protocol == "http/protobuf" => Protocol::HttpProtobuf,
            Some((variable, other)) => {
                return Err(ConfigError::new(
                    variable,
                    other,
                    "must be grpc or http/protobuf",
                ));
            }
        };
        let endpoint = match protocol {
            Protocol::HttpProtobuf if endpoint_variable == "OTEL_EXPORTER_OTLP_ENDPOINT" => {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            }
            _ => endpoint,
        };
        if protocol == Protocol::HttpProtobuf && endpoint.starts_with("https://") {
            return Err(ConfigError::new(
                endpoint_variable,
                endpoint,
                "https collectors are reached over grpc: set OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            ));
        }
        let certificate = first([
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ])?
        .map(|(_, path)| path.into());
        Ok(Some(Self {
            endpoint,
            protocol,
            certificate,
        }))
    }
}

/// Installs the process-wide log and trace subscriber for `service` (the `service.name` of
/// exported spans), exporting as the standard `OTEL_*` variables say. Later calls return the
/// first installation, so `swarm up` and tests may call it for every service they start. Must
/// run inside a Tokio runtime when exporting.
pub fn init(service: &str) -> Result<Telemetry, ConfigError> {
    Ok(init_with(service, Export::from_env()?))
}

/// Installs telemetry as [`init`] does, exporting to `export` if given.
pub fn init_with(service: &str, export: Option<Export>) -> Telemetry {
    let provider = PROVIDER.get_or_init(|| install(service, export)).clone();
    Telemetry { provider }
}

/// Describes this process to tracing backends: `service.name` (unless `OTEL_SERVICE_NAME`
/// says otherwise), `service.version`, `service.instance.id` (the host and pid that metrics
/// name it by, too), and whatever `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource(service: &str) -> Resource {
    let builder = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", crate::metrics::instance_id()),
    ]);
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(service.to_owned()).build()
    }
}

/// Builds the exporter of `export`.
fn exporter(export: &Export) -> Result<OnRuntime<SpanExporter>, String> {
    let exporter = match export.protocol {
        Protocol::Grpc => {
            let mut builder = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(export.endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT);
            if export.endpoint.starts_with("https://") {
                builder = builder.with_tls_config(collector_tls(export.certificate.as_deref())?);
            }
            builder.build()
        }
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(export.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .map_err(|error| error.to_string())?;
    Ok(OnRuntime {
        exporter,
        runtime: tokio::runtime::Handle::try_current().ok(),
    })
}

/// How an `https` collector is trusted: through the authority in `certificate` when given,
/// else through the system's.
fn collector_tls(
    certificate: Option<&std::path::Path>,
) -> Result<tonic::transport::ClientTlsConfig, String> {
    let tls = tonic::transport::ClientTlsConfig::new();
    Ok(match certificate {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    })
}

/// An exporter whose calls run inside the Tokio runtime that telemetry was set up in: the batch
/// processor exports from a thread of its own, and the OTLP clients need Tokio's timers and
/// sockets.
#[derive(Debug)]
struct OnRuntime<E> {
    exporter: E,
    runtime: Option<tokio::runtime::Handle>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for OnRuntime<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let mut export = std::pin::pin!(self.exporter.export(batch));
        std::future::poll_fn(|cx| {
            let _inside = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
            export.as_mut().poll(cx)
        })
        .await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

fn install(service: &str, export: Option<Export>) -> SdkTracerProvider {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder().with_resource(resource(service));
    let mut export_error = None;
    if let Some(export) = &export {
        match exporter(export) {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => export_error = Some(error),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer("swarm");
    // Each layer filters for itself: logs follow RUST_LOG, spans are Swarm's info-level spans
    // whatever the log level, and the statement layer sees every sqlx statement event.
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let statements = QueryLayer::new(tracer).with_filter(tracing_subscriber::filter::filter_fn(
        crate::metrics::db::interested,
    ));
    let logs = if std::env::var("SWARM_LOG_FORMAT").is_ok_and(|format| format == "json") {
        fmt::layer()
            .json()
            .event_format(JsonWithTrace::default())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    // An error only means a subscriber is installed already (a test harness's, say).
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .with(statements)
        .try_init();
    match (export, export_error) {
        (Some(export), None) => {
            tracing::info!(endpoint = %export.endpoint, protocol = ?export.protocol, service, "exporting spans over otlp");
        }
        (Some(export), Some(error)) => {
            tracing::error!(endpoint = %export.endpoint, %error, "cannot export spans");
        }
        (None, _) => {}
    }
    provider
}

/// The JSON log line of tracing-subscriber, with the `trace_id` and `span_id` of the span the
/// event happened in, so logs and traces join up.
#[derive(Debug)]
struct JsonWithTrace {
    json: fmt::format::Format<fmt::format::Json>,
}

impl Default for JsonWithTrace {
    fn default() -> Self {
        Self {
            json: fmt::format().json(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.json.format_event(ctx, Writer::new(&mut line), event)?;
        let context = opentelemetry::Context::current();
        let span = context.span();
        let ids = span.span_context();
        let body = line.trim_end();
        match body.strip_suffix('}') {
            Some(open) if ids.is_valid() => writeln!(
                writer,
                r#"{open},"trace_id":"{}","span_id":"{}"}}"#,
                ids.trace_id(),
                ids.span_id()
            ),
            _ => writeln!(writer, "{body}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;

    /// Collects what the log layer writes.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn export(variables: &[(&str, &str)]) -> Result<Option<Export>, ConfigError> {
        Export::from_variables(|name| {
            Ok(variables
                .iter()
                .find(|(set, _)| *set == name)
                .map(|(_, value)| (*value).to_owned()))
        })
    }

    #[test]
    fn the_traces_signal_variables_come_first_and_are_used_as_given() {
        assert_eq!(export(&[]).unwrap(), None);
        let generic = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            generic.unwrap().unwrap().endpoint,
            "http://collector:4318/v1/traces"
        );
        let own = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/ingest",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (own.endpoint.as_str(), own.protocol),
            ("http://traces:4318/ingest", Protocol::HttpProtobuf)
        );
        let grpc = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        assert_eq!(
            grpc.unwrap().unwrap(),
            Export {
                endpoint: "http://collector:4317".into(),
                protocol: Protocol::Grpc,
                certificate: None,
            }
        );
        let wrong = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ]);
        assert!(
            wrong
                .unwrap_err()
                .to_string()
                .contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        );
    }

    #[test]
    fn json_lines_carry_the_trace_and_span_ids() {
        let provider = SdkTracerProvider::builder().build();
        let written = Written::default();
        let writer = written.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                fmt::layer()
                    .json()
                    .event_format(JsonWithTrace::default())
                    .with_writer(move || writer.clone()),
            );
        let ids = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("work");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside a span");
            span.context().span().span_context().clone()
        });
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one json object"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].get("trace_id").is_none());
        assert_eq!(lines[1]["fields"]["answer"], 42);
        assert_eq!(lines[1]["trace_id"], ids.trace_id().to_string());
        assert_eq!(lines[1]["span_id"], ids.span_id().to_string());
    }
}
