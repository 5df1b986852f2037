//! Group commit for the queue's busiest writes, creates and completions: writes that arrive
//! while others are being stored wait for the next transaction and share it, so a burst costs
//! a few commits rather than one each. A write that finds nothing in flight is stored at once
//! (a batch of one), so a lone write waits for no one. Each caller is answered after its
//! transaction commits: a 201 still means stored, a completion still means completed. Should a
//! shared transaction be refused, each of its writes is stored on its own, so one write's
//! failure is never another's. Claims that do not wait are grouped the same way, but each
//! agent's claims in a group become one claim statement of their own (see [`Claims`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use swarm_kit::{StoreError, batching};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::task::MAX_CLAIM;
use crate::domain::{Claim, Completion, NewTask, Task};
use crate::storage::{Insertion, TaskStore};

/// The most writes one transaction stores.
const MAX_GROUP: usize = 128;
/// Shared transactions of one kind of write in flight at once, unless the kind says otherwise.
const MAX_IN_FLIGHT: usize = 4;
/// Writes waiting for a transaction at most; more wait to be queued.
const QUEUE_DEPTH: usize = 4096;

/// A kind of write that may share a transaction with others of its kind.
#[async_trait]
pub trait GroupedWrite: Send + Sync + 'static {
    /// What one caller asks to store.
    type Item: Send + Sync + 'static;
    /// What that caller is answered.
    type Outcome: Send + 'static;
    /// Names the kind in the shared transaction's span.
    const KIND: &'static str;
    /// How many shared transactions of the kind may be in flight at once.
    const IN_FLIGHT: usize = MAX_IN_FLIGHT;

    /// Stores one write in a transaction of its own.
    async fn one(
        store: &dyn TaskStore,
        item: &Self::Item,
        now: i64,
    ) -> Result<Self::Outcome, StoreError>;

    /// Stores `items` in one transaction: an outcome for each, in their order.
    async fn many(
        store: &dyn TaskStore,
        items: &[Self::Item],
        now: i64,
    ) -> Result<Vec<Self::Outcome>, StoreError>;
}

/// Creates of tasks that stand alone (see [`NewTask::stands_alone`]).
#[derive(Debug)]
pub struct Creates;

#[async_trait]
impl GroupedWrite for Creates {
    type Item = NewTask;
    type Outcome = Insertion;
    const KIND: &'static str = "create";

    async fn one(store: &dyn TaskStore, task: &NewTask, now: i64) -> Result<Insertion, StoreError> {
        store.insert(task, None, now).await
    }

    async fn many(
        store: &dyn TaskStore,
        tasks: &[NewTask],
        now: i64,
    ) -> Result<Vec<Insertion>, StoreError> {
        match store.insert_many(tasks, now).await? {
            Insertion::Created(created) if created.len() == tasks.len() => Ok(created
                .into_iter()
                .map(|task| Insertion::Created(vec![task]))
                .collect()),
            _ => Err(StoreError::Failed(
                "a shared create stored another count of tasks".to_owned(),
            )),
        }
    }
}

/// Completions of held tasks: each is answered with the completed task, or `None` when its
/// lease no longer names the current attempt.
#[derive(Debug)]
pub struct Completions;

#[async_trait]
impl GroupedWrite for Completions {
    type Item = Completion;
    type Outcome = Option<Task>;
    const KIND: &'static str = "complete";

    async fn one(
        store: &dyn TaskStore,
        completion: &Completion,
        now: i64,
    ) -> Result<Option<Task>, StoreError> {
        let mut completed = store
            .complete_many(std::slice::from_ref(completion), now)
            .await?;
        Ok(completed.pop())
    }

    async fn many(
        store: &dyn TaskStore,
        completions: &[Completion],
        now: i64,
    ) -> Result<Vec<Option<Task>>, StoreError> {
        let mut completed: HashMap<Uuid, Task> = store
            .complete_many(completions, now)
            .await?
            .into_iter()
            .map(|task| (task.id, task))
            .collect();
        Ok(completions
            .iter()
            .map(|completion| completed.remove(&completion.id))
            .collect())
    }
}

/// Claims that do not wait, such as the next claims of finished attempts. The claims of one
/// agent that arrive together become one claim of their total (at most [`MAX_CLAIM`]), whose
/// tasks are dealt out in their order: an agent's slots then share a statement instead of
/// queuing one by one behind the agent's claim lock. Each claim is answered with its tasks, or
/// with why its agent's claim failed (other agents' claims in the group stand).
#[derive(Debug)]
pub struct Claims;

#[async_trait]
impl GroupedWrite for Claims {
    type Item = Claim;
    type Outcome = Result<Vec<Task>, StoreError>;
    const KIND: &'static str = "claim";
    /// One group at a time, so that an agent's claims (which the queue always sends to the same
    /// group commit) never wait for its claim lock behind one another, and the claims that
    /// arrive meanwhile gather into the next statement.
    const IN_FLIGHT: usize = 1;

    async fn one(
        store: &dyn TaskStore,
        claim: &Claim,
        now: i64,
    ) -> Result<Self::Outcome, StoreError> {
        Ok(store.claim(claim, now).await)
    }

    async fn many(
        store: &dyn TaskStore,
        claims: &[Claim],
        now: i64,
    ) -> Result<Vec<Self::Outcome>, StoreError> {
        // Each agent's claims, by their places in `claims`, in the order the agents first ask.
        let mut by_agent: Vec<(Uuid, Vec<usize>)> = Vec::new();
        for (index, claim) in claims.iter().enumerate() {
            match by_agent
                .iter_mut()
                .find(|(agent_id, _)| *agent_id == claim.agent_id)
            {
                Some((_, members)) => members.push(index),
                None => by_agent.push((claim.agent_id, vec![index])),
            }
        }
        // Different agents' claims take different locks: they run side by side.
        let merged = by_agent.iter().map(|(_, members)| {
            let wanted = members
                .iter()
                .map(|&index| claims[index].max_tasks)
                .sum::<u32>()
                .min(MAX_CLAIM);
            let claim = Claim {
                max_tasks: wanted,
                ..claims[members[0]].clone()
            };
            async move { store.claim(&claim, now).await }
        });
        let answers = futures_util::future::join_all(merged).await;
        let mut outcomes: Vec<Self::Outcome> = claims.iter().map(|_| Ok(Vec::new())).collect();
        for ((_, members), answer) in by_agent.into_iter().zip(answers) {
            let mut tasks = answer.map(Vec::into_iter);
            for index in members {
                outcomes[index] = match &mut tasks {
                    Ok(tasks) => {
                        let share = usize::try_from(claims[index].max_tasks).unwrap_or(usize::MAX);
                        Ok(tasks.by_ref().take(share).collect())
                    }
                    Err(error) => Err(error.clone()),
                };
            }
        }
        Ok(outcomes)
    }
}

/// A write waiting for its transaction, and where its outcome goes.
struct Pending<W: GroupedWrite> {
    item: W::Item,
    /// The span of the request that asked: a transaction of its own runs in it, a shared one
    /// links to it.
    caller: tracing::Span,
    outcome: oneshot::Sender<Result<W::Outcome, StoreError>>,
}

impl<W: GroupedWrite> batching::Waiting for Pending<W> {
    fn caller(&self) -> &tracing::Span {
        &self.caller
    }
}

/// Stores writes of kind `W` in shared transactions.
pub struct GroupCommit<W: GroupedWrite> {
    queue: mpsc::Sender<Pending<W>>,
}

impl<W: GroupedWrite> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("kind", &W::KIND)
            .finish_non_exhaustive()
    }
}

impl<W: GroupedWrite> GroupCommit<W> {
    /// Starts grouping writes into `store`, stamped by `now`; the grouping ends once every
    /// handle is dropped.
    pub fn start(store: Arc<dyn TaskStore>, now: impl Fn() -> i64 + Send + 'static) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(batching::run(
            pending,
            W::IN_FLIGHT,
            MAX_GROUP,
            |writes| tracing::info_span!("tasks.group_commit", kind = W::KIND, writes),
            move |batch| {
                let (store, stamp) = (Arc::clone(&store), now());
                async move { store_group::<W>(store.as_ref(), batch, stamp).await }
            },
        ));
        Self { queue }
    }

    /// Stores `item` in the next shared transaction and answers once it committed.
    pub async fn write(&self, item: W::Item) -> Result<W::Outcome, StoreError> {
        let (outcome, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                item,
                caller: tracing::Span::current(),
                outcome,
            })
            .await
            .map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }
}

/// Stores `batch` in one transaction and answers each write. Should the database refuse the
/// shared transaction, or give it up for another (so nothing of it was stored), each write is
/// stored on its own; any other failure, which may leave the outcome unknown, is each caller's
/// answer.
async fn store_group<W: GroupedWrite>(store: &dyn TaskStore, batch: Vec<Pending<W>>, now: i64) {
    let (items, outcomes): (Vec<W::Item>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.item, pending.outcome))
        .unzip();
    if items.len() > 1 {
        match W::many(store, &items, now).await {
            Ok(stored) => {
                for (outcome, stored) in outcomes.into_iter().zip(stored) {
                    outcome.send(Ok(stored)).ok();
                }
                return;
            }
            Err(
                refused @ (StoreError::Conflict(_)
                | StoreError::Refused(_)
                | StoreError::Contention(_)),
            ) => {
                tracing::debug!(error = %refused, kind = W::KIND, writes = items.len(), "shared transaction refused, storing each write alone");
            }
            Err(error) => {
                for outcome in outcomes {
                    outcome.send(Err(error.clone())).ok();
                }
                return;
            }
        }
    }
    for (outcome, item) in outcomes.into_iter().zip(&items) {
        outcome.send(W::one(store, item, now).await).ok();
    }
}

/// The answer to a write that arrives while the service stops.
fn stopping() -> StoreError {
    StoreError::Unavailable("the tasks service is stopping".to_owned())
}
