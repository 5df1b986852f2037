//! The Swarm worker SDK: what an agent program uses to join a Swarm.
//!
//! [`Worker::register`] joins Swarm through the gateway (gRPC on the gateway's own address,
//! with an agent key, so a worker host never holds the services' token) and keeps the agent
//! alive with heartbeats in the background that list the tasks it runs (they stop when the
//! worker is dropped). Those heartbeats renew the tasks' leases, at least every second while it
//! holds any, so a handler may work for hours without reporting; and they raise the
//! cancellation signal ([`Assignment::is_cancelled`], [`Assignment::cancelled`]) of a task that
//! was cancelled, timed out or taken back. [`Worker::run`] then
//! long-polls the tasks service for work the agent is able to do, runs a handler on each task
//! (never more at once than the agent's `max_concurrency`; one that panics fails its attempt),
//! and reports each outcome, retried with jittered backoff until acknowledged (for up to a
//! lease). Each report also claims the slot's next task (the gateway's `FinishTask`), so while
//! the queue has work a slot goes from one task to the next in one round trip:
//!
//! ```no_run
//! # async fn demo() -> Result<(), swarm_sdk::SdkError> {
//! use swarm_sdk::{AgentSpec, Failure, Gateway, Worker};
//! let spec = AgentSpec::new("echo-1").capability("echo").max_concurrency(4);
//! let gateway = Gateway::local(std::env::var("SWARM_KEY").ok());
//! let worker = Worker::register(&gateway, spec).await?;
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
//! [`Assignment::fail`], [`Assignment::finish`]) are there for agents that schedule work
//! themselves.

mod worker;

pub use worker::{AgentSpec, Assignment, Failure, Gateway, SdkError, Worker};
