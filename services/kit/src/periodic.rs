//! Background jobs that run at a fixed period until their service stops.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `job` every `period`, the first time one period from now, until `stop` is cancelled. A
/// run that overruns its period delays the next one rather than bunching runs up; a run under way
/// when `stop` is cancelled finishes first.
pub async fn every<Fut>(period: Duration, stop: CancellationToken, mut job: impl FnMut() -> Fut)
where
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => job().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_job_runs_a_period_apart_from_one_period_on_until_stopped() {
        let stop = CancellationToken::new();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = runs.clone();
        let job = tokio::spawn(every(Duration::from_secs(5), stop.clone(), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
        let ran = || runs.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(ran(), 0, "nothing runs at start");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ran(), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ran(), 2);
        stop.cancel();
        job.await.expect("the loop ends when stopped");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ran(), 2, "nothing runs once stopped");
    }
}
