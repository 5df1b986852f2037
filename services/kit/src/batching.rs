//! Batching of concurrent requests: a few batches are in flight at once, and the requests that
//! queue while none is free go out together in the next one, so a burst costs a few calls
//! rather than one each, and a lone request waits for no one. A batch of one runs in its
//! caller's span; a shared batch runs in a span of its own that follows from every caller's.

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
