//! What observability costs on the read path, measured in one run: `swarm-bench overhead`
//! runs the get-task benchmark in child processes (telemetry is set up once per process) with
//! span export off and on (to a collector this process runs, which counts what arrives) and
//! with the metrics layer off and on, and with the gateway's guards (key checks, rate limits,
//! ETags) off and on, rotating the variants' order over several rounds, and reports each
//! variant against the baseline of the same round (the median over the rounds), so that a
//! machine whose speed drifts over the run skews no variant.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::BenchOptions;

/// One configuration of the read path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// How it is reported.
    pub name: &'static str,
    /// Whether spans are exported over OTLP.
    pub export_spans: bool,
    /// Whether every process measures its requests and reports to the metrics service.
    pub report_metrics: bool,
    /// Whether the gateway checks keys, limits rates and computes ETags.
    pub guards: bool,
}

/// How long a child may take beyond its two measuring periods.
const CHILD_SLACK: Duration = Duration::from_secs(30);

/// The variants compared: the first is the baseline, which has all of them off.
pub const VARIANTS: [Variant; 4] = [
    Variant {
        name: "baseline",
        export_spans: false,
        report_metrics: false,
        guards: false,
    },
    Variant {
        name: "span export",
        export_spans: true,
        report_metrics: false,
        guards: false,
    },
    Variant {
        name: "metrics layer",
        export_spans: false,
        report_metrics: true,
        guards: false,
    },
    Variant {
        name: "auth+limit+etag",
        export_spans: false,
        report_metrics: false,
        guards: true,
    },
];

/// One child run's get-task figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// Successful reads per second.
    pub throughput: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
    /// CPU time per request, in milliseconds.
    pub cpu_ms: f64,
}

/// A variant's runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The variant.
    pub variant: Variant,
    /// One run per round.
    pub runs: Vec<Run>,
}

impl Measured {
    /// Returns the median throughput over the rounds.
    pub fn throughput(&self) -> f64 {
        median(self.runs.iter().map(|run| run.throughput).collect())
    }

    /// Returns the median CPU time per request over the rounds, in milliseconds.
    pub fn cpu_ms(&self) -> f64 {
        median(self.runs.iter().map(|run| run.cpu_ms).collect())
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Everything one overhead run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct OverheadReport {
    /// Each variant, baseline first.
    pub variants: Vec<Measured>,
    /// Spans the collector received from the export runs.
    pub spans_exported: u64,
}

impl OverheadReport {
    /// Returns `measured`'s throughput as a share of the baseline's: the median over the
    /// rounds of the ratio within each round.
    pub fn throughput_ratio(&self, measured: &Measured) -> f64 {
        paired_median(measured, &self.variants[0], |run| run.throughput)
    }

    /// Returns the throughput `measured`'s CPU time per request allows as a share of the
    /// baseline's (the inverse ratio of CPU times), paired by round like the throughput.
    pub fn capacity_ratio(&self, measured: &Measured) -> f64 {
        paired_median(&self.variants[0], measured, |run| run.cpu_ms)
    }
}

/// Returns the median over the rounds of `figure` of `numerator` divided by that of
/// `denominator` in the same round.
fn paired_median(numerator: &Measured, denominator: &Measured, figure: fn(&Run) -> f64) -> f64 {
    median(
        numerator
            .runs
            .iter()
            .zip(&denominator.runs)
            .map(|(top, bottom)| figure(top) / figure(bottom))
            .collect(),
    )
}

/// Why an overhead run failed.
#[derive(Debug, thiserror::Error)]
pub enum OverheadError {
    /// A child could not be started or the collector could not listen.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A child failed or printed no figures.
    #[error("the {variant} run failed: {detail}")]
    Child {
        /// The variant.
        variant: &'static str,
        /// What it said.
        detail: String,
    },
}

/// Counts the spans it receives.
#[derive(Debug, Clone, Default)]
struct CountingCollector(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for CountingCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len() as u64)
            .sum();
        self.0.fetch_add(spans, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Runs every variant `rounds` times, alternating, each in a child process of this binary
/// (`swarm-bench read`) over a fresh SQLite file under `data_dir`.
pub async fn measure(
    options: &BenchOptions,
    rounds: usize,
    data_dir: &std::path::Path,
) -> Result<OverheadReport, OverheadError> {
    let collector = CountingCollector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    let mut variants: Vec<Measured> = VARIANTS
        .iter()
        .map(|variant| Measured {
            variant: *variant,
            runs: Vec::new(),
        })
        .collect();
    let mut outcome = Ok(());
    'rounds: for round in 0..rounds {
        // Each round starts with another variant, so drift over the run spreads evenly.
        for index in 0..variants.len() {
            let measured = &mut variants[(index + round) % VARIANTS.len()];
            let file = data_dir.join(format!(
                "overhead-{round}-{}.db",
                measured.variant.name.replace(' ', "-")
            ));
            let run = child_run(options, measured.variant, &endpoint, &file).await;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            match run {
                Ok(run) => measured.runs.push(run),
                Err(error) => {
                    outcome = Err(error);
                    break 'rounds;
                }
            }
        }
    }
    stop.cancel();
    let _ = serving.await;
    outcome.map(|()| OverheadReport {
        variants,
        spans_exported: collector.0.load(Ordering::Relaxed),
    })
}

async fn child_run(
    options: &BenchOptions,
    variant: Variant,
    endpoint: &str,
    file: &std::path::Path,
) -> Result<Run, OverheadError> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .arg("read")
        .arg("--database-url")
        .arg(format!("sqlite://{}", file.display()))
        .arg("--seconds")
        .arg(options.duration.as_secs().to_string())
        .arg("--concurrency")
        .arg(options.concurrency.to_string())
        .arg("--report-metrics")
        .arg(variant.report_metrics.to_string())
        .arg("--guards")
        .arg(variant.guards.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if variant.export_spans {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    } else {
        command.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    }
    command.kill_on_drop(true);
    let allowed = options.duration * 2 + CHILD_SLACK;
    let output = tokio::time::timeout(allowed, command.output())
        .await
        .map_err(|_| OverheadError::Child {
            variant: variant.name,
            detail: format!("no answer within {allowed:?}"),
        })??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|_| output.status.success());
    let figure = |name: &str| figures.as_ref().and_then(|value| value[name].as_f64());
    match (
        figure("throughput"),
        figure("p50_ms"),
        figure("p99_ms"),
        figure("cpu_ms"),
    ) {
        (Some(throughput), Some(p50_ms), Some(p99_ms), Some(cpu_ms)) => Ok(Run {
            throughput,
            p50_ms,
            p99_ms,
            cpu_ms,
        }),
        _ => Err(OverheadError::Child {
            variant: variant.name,
            detail: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn ratios_pair_each_run_with_the_baseline_of_its_round() {
        let run = |throughput: f64, cpu_ms: f64| Run {
            throughput,
            p50_ms: 1.0,
            p99_ms: 2.0,
            cpu_ms,
        };
        // The machine halves its speed in the second round and recovers in the third.
        let baseline = Measured {
            variant: VARIANTS[0],
            runs: vec![run(1000.0, 0.2), run(500.0, 0.4), run(1000.0, 0.2)],
        };
        let export = Measured {
            variant: VARIANTS[1],
            runs: vec![run(900.0, 0.25), run(450.0, 0.5), run(900.0, 0.25)],
        };
        let report = OverheadReport {
            variants: vec![baseline, export.clone()],
            spans_exported: 0,
        };
        assert!((report.throughput_ratio(&export) - 0.9).abs() < 1e-9);
        assert!((report.capacity_ratio(&export) - 0.8).abs() < 1e-9);
    }
}
