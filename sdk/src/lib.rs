//! The Swarm worker SDK: what an agent program uses to join a Swarm.
//!
//! [`Worker::register`] registers the agent with the agents service and keeps it alive with
//! heartbeats in the background (they stop when the worker is dropped). [`Worker::run`] then
//! long-polls the tasks service for work the agent is able to do, runs a handler on each task
//! (never more at once than the agent's `max_concurrency`), and reports each outcome:
//!
//! ```no_run
//! # async fn demo() -> Result<(), swarm_sdk::SdkError> {
//! use swarm_sdk::{AgentSpec, Endpoints, Failure, Worker};
//! let spec = AgentSpec::new("echo-1").capability("echo").max_concurrency(4);
//! let worker = Worker::register(&Endpoints::local(), spec).await?;
//! worker
//!     .run(
//!         |task| async move {
//!             match task.kind.as_str() {
//!                 "echo" => Ok(task.payload.clone()),
//!                 other => Err(Failure::permanent(format!("cannot do {other}"))),
//!             }
//!         },
//!         std::future::pending(),
//!     )
//!     .await
//! # }
//! ```
//!
//! Lower-level calls ([`Worker::claim`], [`Assignment::progress`], [`Assignment::complete`],
//! [`Assignment::fail`]) are there for agents that schedule work themselves.

mod worker;

pub use worker::{AgentSpec, Assignment, Endpoints, Failure, SdkError, Worker};
