//! Background upkeep of the queue: the sweeper that returns expired attempts and the tasks of
//! lost agents to the queue and folds the kept task counts, and the pruner that deletes finished tasks past their retention age.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::{Dispatcher, TaskQueue};

/// How often finished tasks are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Every `sweep_interval`, ends expired leases, takes tasks back from agents that are deleted
/// or offline and folds the kept task counts; every hour, prunes finished tasks older than `retention` (never, when
/// zero); until `shutdown` is cancelled. Failures are logged and retried on the next tick.
pub async fn run(
    queue: Arc<TaskQueue>,
    dispatcher: Dispatcher,
    sweep_interval: Duration,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let mut sweep = tokio::time::interval(sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = sweep.tick() => {
                if let Err(error) = queue.sweep_expired_leases().await {
                    warn!(%error, "lease sweep failed");
                }
                if let Err(error) = dispatcher.requeue_tasks_of_lost_agents().await {
                    warn!(%error, "agent liveness sweep failed");
                }
                if let Err(error) = queue.fold_counts().await {
                    warn!(%error, "folding task counts failed");
                }
            }
            _ = prune.tick(), if !retention.is_zero() => {
                match queue.prune_finished(retention).await {
                    Ok(0) => {}
                    Ok(pruned) => info!(pruned, "pruned finished tasks"),
                    Err(error) => warn!(%error, "pruning finished tasks failed"),
                }
            }
        }
    }
}
