//! Workflows: a graph of up to 1,000 tasks submitted in one call, each named by a key unique
//! in the workflow and waiting for the keys it depends on. A workflow is checked whole (unique
//! and known keys, no cycle) and planned into a batch whose tasks come after what they wait
//! for; its status follows from its tasks'.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use swarm_kit::validate::check_name;
use uuid::Uuid;

use super::NewTask;
use super::queue::MAX_BATCH;
use crate::error::TaskError;

/// Where a workflow is, as its tasks tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowStatus {
    /// Some task is yet to finish, and none failed or was cancelled.
    Running,
    /// Every task completed.
    Completed,
    /// A task failed for good.
    Failed,
    /// A task was cancelled (and none failed).
    Cancelled,
}

impl WorkflowStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Returns the lowercase name used in storage and in the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkflowStatus {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| TaskError::Invalid(format!("unknown workflow status {s:?}")))
    }
}

/// A workflow as stored, with the status and times its tasks give it (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    /// The workflow id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// On whose behalf it was submitted.
    pub user_id: Option<String>,
    /// Where it is.
    pub status: WorkflowStatus,
    /// When it was created.
    pub created_at: i64,
    /// When one of its tasks last changed.
    pub updated_at: i64,
    /// When its last task finished, once it is no longer running.
    pub finished_at: Option<i64>,
}

/// A workflow with its tasks, in the order they were planned, and its edges: each
/// `(key, depends_on)` says the task `key` waits for the task `depends_on`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowGraph {
    /// The workflow.
    pub workflow: Workflow,
    /// Its tasks.
    pub tasks: Vec<super::Task>,
    /// Which task waits for which, by key.
    pub dependencies: Vec<(String, String)>,
}

/// Filters of a workflow list; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowFilter {
    /// Only workflows in this status.
    pub status: Option<WorkflowStatus>,
    /// Only this user's workflows.
    pub user_id: Option<String>,
}

/// One task of a workflow to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowStep {
    /// Unique within the workflow.
    pub key: String,
    /// The task, as a single creation would take it (without dependencies or idempotency key).
    pub task: NewTask,
    /// Keys of the steps it waits for.
    pub depends_on: Vec<String>,
}

/// A workflow to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkflow {
    /// 1 to 128 characters.
    pub name: String,
    /// On whose behalf it is submitted.
    pub user_id: Option<String>,
    /// 1 to 1,000 steps.
    pub steps: Vec<WorkflowStep>,
}

impl NewWorkflow {
    /// Checks the workflow whole and orders its steps so that each comes after the steps it
    /// waits for: the tasks to insert as one batch (keys and `after` set). A duplicate or
    /// unknown key or a cycle is refused, naming it.
    pub fn plan(self) -> Result<Vec<NewTask>, TaskError> {
        check_name("name", &self.name)?;
        if !(1..=MAX_BATCH).contains(&self.steps.len()) {
            return Err(TaskError::Invalid(format!(
                "a workflow holds 1 to {MAX_BATCH} tasks"
            )));
        }
        let mut index = HashMap::with_capacity(self.steps.len());
        for (at, step) in self.steps.iter().enumerate() {
            check_name("key", &step.key)
                .map_err(|error| TaskError::Invalid(format!("tasks[{at}].{}", error.0)))?;
            if index.insert(step.key.as_str(), at).is_some() {
                return Err(TaskError::Invalid(format!(
                    "tasks[{at}].key {:?} is used twice",
                    step.key
                )));
            }
        }
        let mut parents = Vec::with_capacity(self.steps.len());
        for (at, step) in self.steps.iter().enumerate() {
            let mut of_step = Vec::with_capacity(step.depends_on.len());
            for key in &step.depends_on {
                let parent = index.get(key.as_str()).ok_or_else(|| {
                    TaskError::Invalid(format!("tasks[{at}].depends_on names unknown key {key:?}"))
                })?;
                of_step.push(*parent);
            }
            parents.push(of_step);
        }
        let order = topological_order(&parents).map_err(|at| {
            TaskError::Invalid(format!(
                "tasks form a cycle through key {:?}",
                self.steps[at].key
            ))
        })?;
        let mut position = vec![0; order.len()];
        for (planned, step) in order.iter().enumerate() {
            position[*step] = planned;
        }
        let mut steps: Vec<Option<WorkflowStep>> = self.steps.into_iter().map(Some).collect();
        Ok(order
            .iter()
            .map(|step| {
                let WorkflowStep { key, task, .. } = steps[*step].take().expect("each step once");
                NewTask {
                    after: parents[*step]
                        .iter()
                        .map(|parent| position[*parent])
                        .collect(),
                    workflow_key: Some(key),
                    user_id: self.user_id.clone(),
                    ..task
                }
            })
            .collect())
    }
}

/// Orders the steps of a graph (each step's parents by index) so that parents come first;
/// on a cycle, names a step on it.
fn topological_order(parents: &[Vec<usize>]) -> Result<Vec<usize>, usize> {
    let mut children = vec![Vec::new(); parents.len()];
    let mut waiting_on: Vec<usize> = parents.iter().map(Vec::len).collect();
    for (child, of_child) in parents.iter().enumerate() {
        for parent in of_child {
            children[*parent].push(child);
        }
    }
    let mut ready: Vec<usize> = (0..parents.len())
        .filter(|step| waiting_on[*step] == 0)
        .collect();
    ready.reverse();
    let mut order = Vec::with_capacity(parents.len());
    while let Some(step) = ready.pop() {
        order.push(step);
        for child in &children[step] {
            waiting_on[*child] -= 1;
            if waiting_on[*child] == 0 {
                ready.push(*child);
            }
        }
    }
    match (0..parents.len()).find(|step| waiting_on[*step] > 0) {
        Some(on_cycle) => Err(on_cycle),
        None => Ok(order),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(key: &str, depends_on: &[&str]) -> WorkflowStep {
        WorkflowStep {
            key: key.into(),
            task: NewTask {
                title: key.into(),
                ..NewTask::default()
            },
            depends_on: depends_on.iter().map(|key| (*key).to_owned()).collect(),
        }
    }

    fn workflow(steps: Vec<WorkflowStep>) -> NewWorkflow {
        NewWorkflow {
            name: "w".into(),
            user_id: Some("ada".into()),
            steps,
        }
    }

    #[test]
    fn steps_come_after_what_they_wait_for() {
        let planned = workflow(vec![
            step("write", &["research-a", "research-b"]),
            step("research-a", &["plan"]),
            step("plan", &[]),
            step("research-b", &["plan"]),
        ])
        .plan()
        .unwrap();
        let keys: Vec<&str> = planned
            .iter()
            .map(|task| task.workflow_key.as_deref().unwrap())
            .collect();
        let at = |key: &str| keys.iter().position(|k| *k == key).unwrap();
        assert!(at("plan") < at("research-a") && at("research-a") < at("write"));
        assert!(at("research-b") < at("write"));
        let write = &planned[at("write")];
        let mut after = write.after.clone();
        after.sort_unstable();
        let mut expected = vec![at("research-a"), at("research-b")];
        expected.sort_unstable();
        assert_eq!(after, expected);
        assert!(
            planned
                .iter()
                .all(|task| task.user_id.as_deref() == Some("ada"))
        );
    }

    #[test]
    fn bad_graphs_are_refused_and_named() {
        let refused = |steps| match workflow(steps).plan() {
            Err(TaskError::Invalid(reason)) => reason,
            other => panic!("accepted: {other:?}"),
        };
        assert!(refused(vec![step("a", &["b"]), step("b", &["a"])]).contains("cycle"));
        assert!(refused(vec![step("a", &["a"])]).contains("cycle"));
        assert!(refused(vec![step("a", &[]), step("a", &[])]).contains("used twice"));
        assert!(refused(vec![step("a", &["ghost"])]).contains("unknown key \"ghost\""));
        assert!(refused(vec![]).contains("1 to 1000"));
    }
}
