//! The end-to-end suites that share one test binary (one link of the whole stack): each module
//! starts its own stacks on port 0. The tracing suites stay binaries of their own, because
//! telemetry is set up once per process.

mod agents;
mod auth;
mod cache;
mod dashboard;
mod dispatch;
mod grpc;
mod metrics;
mod rest;
mod sdk_worker;
