//! Batching of concurrent requests: a few batches are in flight at once, and the requests that
//! queue while none is free, or that are sent in the same moment, go out together in the next
//! one, so a burst costs a few calls rather than one each, and a lone request waits for no one
//! and no timer. A batch of one runs in its caller's span; a shared batch runs in a span of its
//! own that follows from every caller's.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

/// A request waiting for its batch.
pub trait Waiting: Send + 'static {
    /// The span of the request that asked.
    fn caller(&self) -> &tracing::Span;
}

/// Takes what is waiting in `pending` (up to `max_batch` at once) whenever fewer than
/// `in_flight` batches run, and spawns `handle` on it, in the span described above (a shared
/// batch's span comes from `shared_span`, given the batch's size). Ends once every sender is
/// gone.
pub async fn run<T, Fut>(
    mut pending: mpsc::Receiver<T>,
    in_flight: usize,
    max_batch: usize,
    shared_span: impl Fn(usize) -> tracing::Span,
    mut handle: impl FnMut(Vec<T>) -> Fut,
) where
    T: Waiting,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if pending.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        gather_ready(&mut pending, &mut batch, max_batch).await;
        let span = match batch.as_slice() {
            [one] => one.caller().clone(),
            _ => {
                let span = shared_span(batch.len());
                for waiting in &batch {
                    span.follows_from(waiting.caller());
                }
                span
            }
        };
        let work = handle(batch);
        tokio::spawn(
            async move {
                work.await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Lets the tasks that are ready to run add their requests to `batch` (up to `max_batch`)
/// before it leaves. A finished batch wakes its callers and then this loop, and Tokio's
/// multi-thread scheduler runs the task it woke last first: without a turn for the callers, the
/// next batch would leave with only the first request that came in and the callers' next
/// requests would trail behind it one by one. The loop yields, so it runs again once its worker
/// has run what was ready (at most until the scheduler's next periodic check): a lone request
/// waits for the work already in hand, never for a timer.
async fn gather_ready<T>(pending: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max_batch: usize) {
    if batch.len() >= max_batch {
        return;
    }
    tokio::task::yield_now().await;
    while batch.len() < max_batch
        && let Ok(waiting) = pending.try_recv()
    {
        batch.push(waiting);
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    /// A request that learns the size of the batch it left in.
    struct Request {
        caller: tracing::Span,
        batch_size: oneshot::Sender<usize>,
    }

    impl Waiting for Request {
        fn caller(&self) -> &tracing::Span {
            &self.caller
        }
    }

    /// Starts batching with one batch in flight; returns where requests go.
    async fn start() -> mpsc::Sender<Request> {
        let (requests, pending) = mpsc::channel(64);
        tokio::spawn(run(
            pending,
            1,
            64,
            |_| tracing::Span::none(),
            |batch: Vec<Request>| async move {
                let size = batch.len();
                for request in batch {
                    let _ = request.batch_size.send(size);
                }
            },
        ));
        // The loop waits for its first request before any is sent.
        tokio::task::yield_now().await;
        requests
    }

    /// Sends a request and returns where its batch size will arrive.
    async fn send(requests: &mpsc::Sender<Request>) -> oneshot::Receiver<usize> {
        let (batch_size, answer) = oneshot::channel();
        let request = Request {
            caller: tracing::Span::none(),
            batch_size,
        };
        requests.send(request).await.expect("batching runs");
        answer
    }

    #[tokio::test]
    async fn a_lone_request_leaves_in_a_batch_of_its_own() {
        let requests = start().await;
        assert_eq!(send(&requests).await.await, Ok(1));
    }

    #[tokio::test]
    async fn requests_sent_in_the_same_moment_leave_together() {
        let requests = start().await;
        // The first request wakes the loop before the other senders have run: they are
        // scheduled behind it, as callers woken by a finished batch are.
        let first = send(&requests).await;
        let others: Vec<_> = (0..9)
            .map(|_| {
                let requests = requests.clone();
                tokio::spawn(async move { send(&requests).await.await })
            })
            .collect();
        assert_eq!(first.await, Ok(10));
        for other in others {
            assert_eq!(other.await.expect("the sender ran"), Ok(10));
        }
    }
}
