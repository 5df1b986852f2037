//! Watchers of tasks. Every watcher of one task shares one channel holding the task's latest
//! state, so a change is kept once however many watch it, and a watcher that reads slowly skips
//! to the newest state instead of queueing copies. Watchers are capped in total; the queue looks
//! again at every watched task together, once per interval, for changes other replicas made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::Task;
use crate::storage::TaskVersion;

/// What a watcher last saw of its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The task as it is.
    Task(Arc<Task>),
    /// The task no longer exists (pruned).
    Gone,
}

struct Watched {
    state: watch::Sender<Seen>,
    watchers: usize,
}

/// Every watched task of one process.
pub struct Watchers {
    watched: Mutex<Registry>,
    limit: usize,
}

#[derive(Default)]
struct Registry {
    tasks: HashMap<Uuid, Watched>,
    total: usize,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// There are as many watchers as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchersFull {
    /// The cap that was reached.
    pub limit: usize,
}

impl Watchers {
    /// Allows at most `limit` watchers at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            watched: Mutex::new(Registry::default()),
            limit,
        })
    }

    /// Starts watching `task`, which was just read: the watch starts at the newer of it and
    /// what other watchers of the task have seen.
    pub fn watch(self: &Arc<Self>, task: Arc<Task>) -> Result<Watch, WatchersFull> {
        let id = task.id;
        let mut registry = self.lock();
        if registry.total >= self.limit {
            return Err(WatchersFull { limit: self.limit });
        }
        registry.total += 1;
        let watched = registry.tasks.entry(id).or_insert_with(|| Watched {
            state: watch::channel(Seen::Task(Arc::clone(&task))).0,
            watchers: 0,
        });
        watched.watchers += 1;
        offer(&watched.state, Seen::Task(task));
        let mut states = watched.state.subscribe();
        states.mark_changed();
        Ok(Watch {
            watchers: Arc::clone(self),
            id,
            states,
        })
    }

    /// Hands a task's new state to its watchers, if it has any.
    pub fn publish(&self, task: &Arc<Task>) {
        if let Some(watched) = self.lock().tasks.get(&task.id) {
            offer(&watched.state, Seen::Task(Arc::clone(task)));
        }
    }

    /// Tells the watchers of `id` that the task is gone.
    pub fn gone(&self, id: Uuid) {
        if let Some(watched) = self.lock().tasks.get(&id) {
            watched.state.send_replace(Seen::Gone);
        }
    }

    /// Returns the versions of the watched tasks that are not final yet.
    pub fn unfinished(&self) -> Vec<TaskVersion> {
        self.lock()
            .tasks
            .values()
            .filter_map(|watched| match &*watched.state.borrow() {
                Seen::Task(task) if !task.status.is_final() => Some(TaskVersion::of(task)),
                _ => None,
            })
            .collect()
    }

    /// Tells how many watchers there are.
    pub fn count(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Replaces what the watchers of a task saw with `seen` when it is news: a state at least as
/// recent as theirs that differs from it (a re-read that raced a newer change never goes back).
fn offer(state: &watch::Sender<Seen>, seen: Seen) {
    state.send_if_modified(|current| {
        let news = match (&*current, &seen) {
            (Seen::Task(old), Seen::Task(new)) => new.updated_at >= old.updated_at && old != new,
            (Seen::Gone, _) => false,
            (Seen::Task(_), Seen::Gone) => true,
        };
        if news {
            *current = seen;
        }
        news
    });
}

/// One watcher of one task; leaves the registry when dropped.
pub struct Watch {
    watchers: Arc<Watchers>,
    id: Uuid,
    states: watch::Receiver<Seen>,
}

impl Watch {
    /// Waits for a state this watcher has not seen yet and returns it; `None` once the
    /// registry dropped the task's channel.
    pub async fn next(&mut self) -> Option<Seen> {
        self.states.changed().await.ok()?;
        Some(self.states.borrow_and_update().clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut registry = self.watchers.lock();
        registry.total -= 1;
        if let Some(watched) = registry.tasks.get_mut(&self.id) {
            watched.watchers -= 1;
            if watched.watchers == 0 {
                registry.tasks.remove(&self.id);
            }
        }
    }
}
