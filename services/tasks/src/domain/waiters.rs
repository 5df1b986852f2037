//! Claims waiting for work. Each waiting claim is enlisted with what its agent can take; work
//! that becomes ready wakes the longest-waiting claim able to take it, and only that one, so a
//! new task costs one claim statement however many agents wait, and a waiting claim runs no
//! statement until it is woken.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::domain::Task;

/// What a waiting claim must be able to take to be woken for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyWork {
    /// The task that became ready.
    pub id: Uuid,
    /// The only agent that may take it, when pinned.
    pub pinned_agent_id: Option<Uuid>,
    /// Capabilities the taker must all have (unpinned tasks).
    pub required_capabilities: Vec<String>,
    /// Since when it may be claimed.
    pub available_at: i64,
}

impl ReadyWork {
    /// What `task` asks of its taker.
    pub fn of(task: &Task) -> Self {
        Self {
            id: task.id,
            pinned_agent_id: task.pinned_agent_id,
            required_capabilities: task.required_capabilities.clone(),
            available_at: task.available_at,
        }
    }

    /// Tells whether an agent with `capabilities` may take this work.
    fn suits(&self, agent_id: Uuid, capabilities: &[String]) -> bool {
        match self.pinned_agent_id {
            Some(pinned) => pinned == agent_id,
            None => self
                .required_capabilities
                .iter()
                .all(|needed| capabilities.contains(needed)),
        }
    }
}

struct Waiter {
    ticket: u64,
    agent_id: Uuid,
    capabilities: Vec<String>,
    wake: oneshot::Sender<ReadyWork>,
}

/// The waiting claims of one process, longest-waiting first.
#[derive(Default)]
pub struct Waiters {
    queue: Mutex<VecDeque<Waiter>>,
    next_ticket: AtomicU64,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("waiting", &self.len())
            .finish()
    }
}

impl Waiters {
    /// Enlists a claim of `agent_id` able to take `capabilities`. Enlist before looking for
    /// work, so work that becomes ready meanwhile is not missed; the enlistment ends when the
    /// returned wait is woken or dropped.
    pub fn enlist(&self, agent_id: Uuid, capabilities: &[String]) -> Wait<'_> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (wake, woken) = oneshot::channel();
        self.lock().push_back(Waiter {
            ticket,
            agent_id,
            capabilities: capabilities.to_vec(),
            wake,
        });
        Wait {
            waiters: self,
            ticket,
            woken,
        }
    }

    /// Wakes the longest-waiting claim that may take `work`, other than those of `except`.
    /// Returns whether one was woken.
    pub fn wake_one(&self, work: &ReadyWork, except: Option<Uuid>) -> bool {
        let mut queue = self.lock();
        let mut position = 0;
        while position < queue.len() {
            let waiter = &queue[position];
            if Some(waiter.agent_id) == except || !work.suits(waiter.agent_id, &waiter.capabilities)
            {
                position += 1;
                continue;
            }
            let waiter = queue.remove(position).expect("the position is in bounds");
            // A claim that stopped waiting meanwhile dropped its receiver: try the next one.
            if waiter.wake.send(work.clone()).is_ok() {
                return true;
            }
        }
        false
    }

    /// Tells how many claims wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Tells whether no claim waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One enlisted claim; leaves the list when dropped.
pub struct Wait<'a> {
    waiters: &'a Waiters,
    ticket: u64,
    woken: oneshot::Receiver<ReadyWork>,
}

impl Wait<'_> {
    /// Waits until work this claim may take is ready, and names it.
    pub async fn woken(&mut self) -> Option<ReadyWork> {
        (&mut self.woken).await.ok()
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let mut queue = self.waiters.lock();
        if let Some(position) = queue.iter().position(|w| w.ticket == self.ticket) {
            queue.remove(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(required: &[&str], pinned: Option<Uuid>) -> ReadyWork {
        ReadyWork {
            id: Uuid::now_v7(),
            pinned_agent_id: pinned,
            required_capabilities: required.iter().map(|c| (*c).to_owned()).collect(),
            available_at: 0,
        }
    }

    #[tokio::test]
    async fn one_task_wakes_the_longest_waiting_claim_that_can_take_it() {
        let waiters = Waiters::default();
        let (gpu, cpu_first, cpu_second) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut gpu_wait = waiters.enlist(gpu, &["gpu".into()]);
        let mut first = waiters.enlist(cpu_first, &["cpu".into()]);
        let second = waiters.enlist(cpu_second, &["cpu".into()]);
        let task = work(&["cpu"], None);
        assert!(waiters.wake_one(&task, None));
        assert_eq!(first.woken().await, Some(task));
        assert_eq!(
            waiters.len(),
            2,
            "the gpu claim and the second cpu claim still wait"
        );
        assert!(!waiters.wake_one(&work(&["tpu"], None), None));
        assert!(waiters.wake_one(&work(&[], Some(gpu)), None));
        assert!(gpu_wait.woken().await.is_some());
        drop(second);
        assert!(waiters.is_empty());
    }

    #[test]
    fn a_wake_passed_on_skips_the_agent_that_could_not_take_it() {
        let waiters = Waiters::default();
        let agent = Uuid::now_v7();
        let _wait = waiters.enlist(agent, &[]);
        assert!(!waiters.wake_one(&work(&[], None), Some(agent)));
        assert_eq!(waiters.len(), 1);
    }
}
