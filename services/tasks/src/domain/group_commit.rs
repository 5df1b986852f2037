//! Group commit for task creation: creates that arrive while others are being stored wait
//! for the next transaction and share it, so a burst of creates costs a few commits rather
//! than one each. A create that finds nothing in flight is stored at once (a batch of one),
//! so a lone create waits for no one. Each caller is answered after its transaction commits:
//! a 201 still means stored. Should a shared transaction fail, each of its creates is stored
//! on its own, so one create's failure is never another's.

use std::sync::Arc;

use swarm_kit::{StoreError, batching};
use tokio::sync::{mpsc, oneshot};

use crate::domain::NewTask;
use crate::storage::{Insertion, TaskStore};

/// The most creates one transaction stores.
const MAX_GROUP: usize = 128;
/// Transactions of grouped creates in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// Creates waiting for a transaction at most; more wait to be queued.
const QUEUE_DEPTH: usize = 4096;

/// A create waiting for its transaction, and where its outcome goes.
struct Pending {
    task: NewTask,
    /// The span of the request that asked: a transaction of its own runs in it, a shared one
    /// links to it.
    caller: tracing::Span,
    outcome: oneshot::Sender<Result<Insertion, StoreError>>,
}

impl batching::Waiting for Pending {
    fn caller(&self) -> &tracing::Span {
        &self.caller
    }
}

/// Stores independent creates (no idempotency key, nothing depended on) in shared
/// transactions.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts grouping creates into `store`, stamped by `now`; the grouping ends once every
    /// handle is dropped.
    pub fn start(store: Arc<dyn TaskStore>, now: impl Fn() -> i64 + Send + 'static) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(batching::run(
            pending,
            MAX_IN_FLIGHT,
            MAX_GROUP,
            |creates| tracing::info_span!("tasks.group_commit", creates),
            move |batch| {
                let (store, stamp) = (Arc::clone(&store), now());
                async move { store_group(store.as_ref(), batch, stamp).await }
            },
        ));
        Self { queue }
    }

    /// Stores `task` in the next shared transaction and answers once it committed.
    pub async fn insert(&self, task: NewTask) -> Result<Insertion, StoreError> {
        let (outcome, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                task,
                caller: tracing::Span::current(),
                outcome,
            })
            .await
            .map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }
}

/// Stores `batch` in one transaction and answers each create. Should the database refuse the
/// shared transaction (so nothing of it was stored), each create is stored on its own; any
/// other failure, which may leave the outcome unknown, is each caller's answer.
async fn store_group(store: &dyn TaskStore, batch: Vec<Pending>, now: i64) {
    let (tasks, outcomes): (Vec<NewTask>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.task, pending.outcome))
        .unzip();
    if tasks.len() > 1 {
        match store.insert_many(&tasks, now).await {
            Ok(Insertion::Created(created)) if created.len() == tasks.len() => {
                for (outcome, task) in outcomes.into_iter().zip(created) {
                    outcome.send(Ok(Insertion::Created(vec![task]))).ok();
                }
                return;
            }
            Err(refused @ (StoreError::Conflict(_) | StoreError::Refused(_))) => {
                tracing::debug!(error = %refused, creates = tasks.len(), "shared create refused, storing each alone");
            }
            outcome => {
                let error = match outcome {
                    Err(error) => error,
                    Ok(_) => StoreError::Failed(
                        "a shared create stored another count of tasks".to_owned(),
                    ),
                };
                for outcome in outcomes {
                    outcome.send(Err(error.clone())).ok();
                }
                return;
            }
        }
    }
    for (outcome, task) in outcomes.into_iter().zip(&tasks) {
        outcome.send(store.insert(task, None, now).await).ok();
    }
}

/// Whether `task` may share a transaction with others: it names no idempotency key (which
/// must be checked in its own transaction) and depends on nothing.
pub fn groupable(task: &NewTask) -> bool {
    task.idempotency_key.is_none() && task.depends_on.is_empty() && task.after.is_empty()
}

/// The answer to a create that arrives while the service stops.
fn stopping() -> StoreError {
    StoreError::Unavailable("the tasks service is stopping".to_owned())
}
