//! Long-lived answers per key: each API key may hold a bounded number of task watches (event
//! streams over REST, `WatchTask` over worker gRPC) at once, so one caller cannot take every
//! watch the tasks service allows. The tasks service caps them in total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use swarm_kit::ErrorCode;
use uuid::Uuid;

use crate::error::ApiError;

/// The open streams of every key on this gateway.
#[derive(Debug)]
pub struct StreamSlots {
    open: Mutex<HashMap<Uuid, usize>>,
    per_key: usize,
}

impl StreamSlots {
    /// Allows each key `per_key` streams at once.
    pub fn new(per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            per_key,
        })
    }

    /// Takes one of `key_id`'s places, given back when the slot is dropped; past the cap the
    /// answer is `resource_exhausted` (429).
    pub fn take(self: &Arc<Self>, key_id: Uuid) -> Result<StreamSlot, ApiError> {
        let mut open = self.lock();
        let count = open.entry(key_id).or_default();
        if *count >= self.per_key {
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "this key holds as many open streams as it may ({}); close one first",
                    self.per_key
                ),
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            key_id,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open stream of one key.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    key_id: Uuid,
}

impl StreamSlot {
    /// Ties this place to `stream`: it is given back when the stream is dropped.
    pub fn hold<S: Stream>(self, stream: S) -> impl Stream<Item = S::Item> {
        stream.map(move |item| {
            let _held = &self;
            item
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        if let Some(count) = open.get_mut(&self.key_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_holds_at_most_its_share() {
        let slots = StreamSlots::new(2);
        let (one, other) = (Uuid::now_v7(), Uuid::now_v7());
        let first = slots.take(one).unwrap();
        let _second = slots.take(one).unwrap();
        let refused = slots.take(one).unwrap_err();
        assert_eq!(refused.0.code, ErrorCode::ResourceExhausted);
        let _elsewhere = slots.take(other).expect("another key has its own share");
        drop(first);
        let _again = slots
            .take(one)
            .expect("a closed stream gives its place back");
    }
}
