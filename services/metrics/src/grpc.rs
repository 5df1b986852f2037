//! The `swarm.metrics.v1.MetricsService` gRPC surface: takes reports into the aggregator and
//! answers summaries and Prometheus text, converting domain figures to protobuf.

use std::sync::Arc;

use swarm_kit::metrics::round2;
use swarm_kit::validate::InvalidInput;
use swarm_proto::metrics::v1 as pb;
use swarm_proto::metrics::v1::metrics_service_server::MetricsService;
use tonic::{Request, Response, Status};

use crate::domain::figures::{Latency, Requests};
use crate::domain::{Aggregator, AlertBook, Figures, exposition};

/// The gRPC handler of the metrics service.
#[derive(Debug, Clone)]
pub struct MetricsGrpc {
    aggregator: Arc<Aggregator>,
    alerts: Arc<AlertBook>,
}

impl MetricsGrpc {
    /// Serves `aggregator`, with the alerts of `alerts`.
    pub fn new(aggregator: Arc<Aggregator>, alerts: Arc<AlertBook>) -> Self {
        Self { aggregator, alerts }
    }
}

#[tonic::async_trait]
impl MetricsService for MetricsGrpc {
    async fn record(
        &self,
        request: Request<pb::RecordRequest>,
    ) -> Result<Response<pb::RecordResponse>, Status> {
        let accepted = self
            .aggregator
            .record(request.into_inner())
            .map_err(|error| InvalidInput::new(error.to_string()))?;
        Ok(Response::new(pb::RecordResponse {
            accepted: accepted as u64,
        }))
    }

    async fn get_summary(
        &self,
        _: Request<pb::GetSummaryRequest>,
    ) -> Result<Response<pb::Summary>, Status> {
        let figures = Figures::of(&self.aggregator.snapshot());
        Ok(Response::new(summary(&figures, &self.alerts)))
    }

    async fn get_prometheus(
        &self,
        _: Request<pb::GetPrometheusRequest>,
    ) -> Result<Response<pb::PrometheusText>, Status> {
        let text = exposition::render(&self.aggregator.snapshot().instances);
        Ok(Response::new(pb::PrometheusText { text }))
    }
}

fn summary(figures: &Figures, alerts: &AlertBook) -> pb::Summary {
    let database = &figures.database;
    let cache = &figures.cache;
    pb::Summary {
        requests: Some(pb::RequestSummary {
            total: figures.requests.total,
            errors: figures.requests.errors,
            error_rate: figures.requests.error_rate(),
            latency_ms: Some(latency(figures.requests.latency)),
            routes: figures
                .routes
                .iter()
                .map(|route| {
                    let Requests {
                        total,
                        errors,
                        latency: route_latency,
                    } = &route.requests;
                    pb::RouteSummary {
                        route: route.route.clone(),
                        service: route.service.clone(),
                        total: *total,
                        errors: *errors,
                        latency_ms: Some(latency(*route_latency)),
                    }
                })
                .collect(),
        }),
        database: Some(pb::DatabaseSummary {
            pool_size: database.pool_size,
            checked_out: database.checked_out,
            idle: database.idle,
            slow_queries: database.slow_queries,
            query_latency_ms: Some(latency(database.query_latency)),
        }),
        cache: Some(pb::CacheSummary {
            hits: cache.hits,
            misses: cache.misses,
            hit_rate: cache.hit_rate().unwrap_or(0.0),
            entries: cache.entries,
            evictions: cache.evictions,
        }),
        tasks: figures.tasks.clone(),
        memory: figures
            .memory_bytes
            .iter()
            .map(|(service, bytes)| {
                let rss_mb = round2(bytes / 1_048_576.0);
                (service.clone(), pb::Memory { rss_mb })
            })
            .collect(),
        cpu_percent: figures
            .cpu_percent
            .iter()
            .map(|(service, percent)| (service.clone(), round2(*percent)))
            .collect(),
        alerts: alerts
            .open()
            .into_iter()
            .map(|alert| pb::Alert {
                name: alert.breach.name.to_owned(),
                value: alert.breach.value,
                target: alert.breach.target,
                since: Some(alert.since.into()),
                message: alert.breach.message,
            })
            .collect(),
        window_seconds: u32::try_from(figures.window.as_secs()).unwrap_or(u32::MAX),
        queue_wait_ms: Some(latency(figures.queue_wait)),
        reporters: figures
            .reporters
            .iter()
            .map(|(service, instance, last_seen)| pb::Reporter {
                service: service.clone(),
                instance: instance.clone(),
                last_seen: Some((*last_seen).into()),
            })
            .collect(),
    }
}

fn latency(latency: Latency) -> pb::Latency {
    pb::Latency {
        p50: round2(latency.p50),
        p95: round2(latency.p95),
        p99: round2(latency.p99),
    }
}
