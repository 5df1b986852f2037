//! The task queue's domain: tasks and their rules, messages, retry policy and the queue that
//! ties storage, wake-ups and watchers together.

pub mod attempt;
pub mod dispatch;
pub mod group_commit;
pub mod idempotency;
pub mod message;
pub mod queue;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod task;
pub mod waiters;
pub mod watchers;
pub mod workflow;

pub use attempt::{Attempt, AttemptOutcome};
pub use dispatch::{AgentDirectory, AgentProfile, Dispatcher};
pub use idempotency::IdempotencyKey;
pub use message::{Message, MessageRole, MessageScope, NewMessage};
pub use queue::{HeldSync, QueueSettings, TaskQueue};
pub use retry::RetryPolicy;
pub use schedule::{CronSchedule, NewSchedule, Schedule, ScheduleUpdate, TaskTemplate};
pub use scheduler::Scheduler;
pub use task::{Claim, Completion, Ending, LeaseRef, NewTask, Task, TaskFilter, TaskStatus};
pub use waiters::ReadyWork;
pub use workflow::{
    NewWorkflow, Workflow, WorkflowFilter, WorkflowGraph, WorkflowStatus, WorkflowStep,
};
