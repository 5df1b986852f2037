//! Background upkeep of the queue: the lease sweeper that returns expired attempts to the queue,
//! and the pruner that deletes finished tasks past their retention age.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::TaskQueue;

/// How often finished tasks are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Sweeps expired leases every `sweep_interval` and prunes finished tasks older than
/// `retention` (never, when zero) every hour, until `shutdown` is cancelled. Storage errors are
/// logged and retried on the next tick.
pub async fn run(
    queue: Arc<TaskQueue>,
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
