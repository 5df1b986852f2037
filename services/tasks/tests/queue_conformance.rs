//! One conformance suite for task storage, run against every backend (SQLite and a real
//! PostgreSQL) through the queue that the service uses: creation and idempotency, lists, claims
//! (ordering, routing, leases, racing claimers, claims made together), reports from the lease holder only, retries
//! with backoff, lease expiry, cancellation, messages, watches and pruning, wake-ups that cost
//! one claim per task, bounded watchers, replicas whose clocks disagree, delayed tasks,
//! dependencies (released, cancelled, results handed down), batches, re-drive and the attempts
//! history.

mod counting;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use swarm_kit::clock::Clock;
use swarm_kit::page::Page;
use swarm_kit::testing::{Backend, TestDatabase};
use swarm_tasks::domain::{
    AgentDirectory, AgentProfile, AttemptOutcome, Claim, Dispatcher, IdempotencyKey, LeaseRef,
    MessageRole, MessageScope, NewMessage, NewSchedule, NewTask, NewWorkflow, QueueSettings,
    RetryPolicy, ScheduleUpdate, Scheduler, Task, TaskFilter, TaskQueue, TaskStatus,
    WorkflowFilter, WorkflowGraph, WorkflowStatus, WorkflowStep,
};
use swarm_tasks::error::TaskError;
use swarm_tasks::storage::{self, TaskStore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use counting::CountingStore;

/// A queue on a fresh database; the database lives as long as the fixture.
struct Fixture {
    queue: Arc<TaskQueue>,
    /// The queue's storage, counting the claim statements it runs.
    store: Arc<CountingStore>,
    database: TestDatabase,
}

fn test_settings() -> QueueSettings {
    QueueSettings {
        retry: RetryPolicy {
            base: Duration::from_millis(200),
            max: Duration::from_millis(400),
        },
        poll_interval: Duration::from_millis(50),
        max_watchers: 4,
        slow_watcher_limit: Duration::from_millis(300),
        ..QueueSettings::default()
    }
}

async fn fixture(backend: Backend) -> Fixture {
    let database = TestDatabase::new(backend).await;
    let store = Arc::new(CountingStore::new(
        storage::open(database.pool())
            .await
            .expect("migrations apply"),
    ));
    let queue = replica(&database, store.clone(), Clock::new()).await;
    Fixture {
        queue,
        store,
        database,
    }
}

/// Another queue over the fixture's database, telling time by `clock` once synced.
async fn replica(
    database: &TestDatabase,
    store: Arc<dyn TaskStore>,
    clock: Arc<Clock>,
) -> Arc<TaskQueue> {
    clock
        .sync(&database.pool())
        .await
        .expect("the database tells the time");
    TaskQueue::new(store, test_settings(), clock, CancellationToken::new())
}

fn titled(title: &str) -> NewTask {
    NewTask {
        title: title.to_owned(),
        ..NewTask::default()
    }
}

fn claim_for(agent_id: Uuid, capabilities: &[&str], max_tasks: u32) -> Claim {
    Claim {
        agent_id,
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        max_concurrency: 1000,
        max_tasks,
        wait: Duration::ZERO,
    }
}

fn lease_of(task: &Task) -> LeaseRef {
    LeaseRef {
        agent_id: task.agent_id.expect("claimed task has an agent"),
        lease_id: task.lease_id,
    }
}

async fn claim_one(queue: &TaskQueue, agent_id: Uuid) -> Task {
    let mut tasks = queue.claim(claim_for(agent_id, &[], 1)).await.unwrap();
    assert_eq!(tasks.len(), 1, "one task is ready");
    tasks.remove(0)
}

/// Creates that arrive together share transactions, yet each caller gets its own task, stored;
/// when a shared transaction fails, each create is stored on its own.
async fn concurrent_creates_share_transactions_and_each_gets_its_own_task(backend: Backend) {
    let f = fixture(backend).await;
    let create_all = |prefix: &'static str, count: usize| {
        let queue = Arc::clone(&f.queue);
        futures_util::future::join_all((0..count).map(move |i| {
            let queue = Arc::clone(&queue);
            async move { queue.create(titled(&format!("{prefix} {i}"))).await }
        }))
    };
    let created = create_all("grouped", 300).await;
    let mut ids = HashSet::new();
    for (i, outcome) in created.into_iter().enumerate() {
        let (task, fresh) = outcome.expect("every create succeeds");
        assert!(fresh);
        assert_eq!(
            task.title,
            format!("grouped {i}"),
            "each caller gets its own task"
        );
        assert_eq!(f.queue.get(task.id).await.unwrap().title, task.title);
        ids.insert(task.id);
    }
    assert_eq!(ids.len(), 300, "every create made a task of its own");
    assert!(
        f.store.shared_creates() > 0,
        "creates that arrived together shared a transaction"
    );

    f.store.refuse_shared_creates();
    let created = create_all("alone", 50).await;
    for (i, outcome) in created.into_iter().enumerate() {
        let (task, _) = outcome.expect("a failed shared transaction fails no create");
        assert_eq!(
            f.queue.get(task.id).await.unwrap().title,
            format!("alone {i}")
        );
    }
    let (_, total) = f
        .queue
        .list(&TaskFilter::default(), Page::new(1, 1).unwrap())
        .await
        .unwrap();
    assert_eq!(total, 350, "nothing was stored twice");
    assert_totals_match_rows(&*f.store).await;
}

/// Completions that arrive together share transactions, yet each is answered with its own task
/// and result; a report from an attempt that is over fails alone, and a repeated report is
/// recognised.
async fn concurrent_completions_share_transactions_and_each_gets_its_own_answer(backend: Backend) {
    const TASKS: usize = 60;
    let f = fixture(backend).await;
    let agent = Uuid::now_v7();
    for i in 0..TASKS {
        f.queue.create(titled(&format!("job {i}"))).await.unwrap();
    }
    let claimed = f.queue.claim(claim_for(agent, &[], 100)).await.unwrap();
    assert_eq!(claimed.len(), TASKS);
    let stale = &claimed[0];
    let stale_lease = LeaseRef {
        lease_id: Some(Uuid::now_v7()),
        ..lease_of(stale)
    };
    let answers = futures_util::future::join_all(claimed.iter().enumerate().map(|(i, task)| {
        let lease = if i == 0 { stale_lease } else { lease_of(task) };
        f.queue
            .complete(task.id, lease, format!(r#"{{"title":"{}"}}"#, task.title))
    }))
    .await;
    let mut answers = answers.into_iter();
    assert!(
        matches!(answers.next(), Some(Err(TaskError::NotLeaseHolder { .. }))),
        "a report from an attempt that is over is refused"
    );
    for (task, answer) in claimed.iter().skip(1).zip(answers) {
        let completed = answer.expect("every held task completes");
        assert_eq!(completed.id, task.id, "each caller gets its own task");
        assert_eq!(completed.status, TaskStatus::Completed);
        assert_eq!(
            completed.result.as_deref(),
            Some(format!(r#"{{"title":"{}"}}"#, task.title).as_str())
        );
        assert_eq!(f.queue.get(task.id).await.unwrap(), completed);
    }
    assert_eq!(
        f.queue.get(stale.id).await.unwrap().status,
        TaskStatus::Active,
        "the refused report changed nothing"
    );
    let again = &claimed[1];
    let repeated = f
        .queue
        .complete(
            again.id,
            lease_of(again),
            format!(r#"{{"title":"{}"}}"#, again.title),
        )
        .await
        .expect("a repeated report is answered with the task it completed");
    assert_eq!(repeated.status, TaskStatus::Completed);
    let (attempts, _) = f
        .queue
        .attempts(again.id, Page::new(1, 10).unwrap())
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Completed);
    assert_totals_match_rows(&*f.store).await;
}

async fn created_task_keeps_every_field(backend: Backend) {
    let f = fixture(backend).await;
    let pinned = Uuid::now_v7();
    let (task, created) = f
        .queue
        .create(NewTask {
            title: "résumé ✓".into(),
            kind: "echo".into(),
            payload: r#"{"text":"hi","n":[1,2]}"#.into(),
            priority: 7,
            required_capabilities: vec!["gpu".into(), "echo".into()],
            pinned_agent_id: Some(pinned),
            user_id: Some("ada".into()),
            max_attempts: 5,
            timeout_seconds: 30,
            execution_timeout_seconds: Some(120),
            trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..NewTask::default()
        })
        .await
        .unwrap();
    assert!(created);
    let read = f.queue.get(task.id).await.unwrap();
    assert_eq!(read, task);
    assert_eq!(read.title, "résumé ✓");
    assert_eq!(read.payload, r#"{"text":"hi","n":[1,2]}"#);
    assert_eq!(read.status, TaskStatus::Queued);
    assert_eq!(read.required_capabilities, ["echo", "gpu"]);
    assert_eq!(
        (read.agent_id, read.pinned_agent_id),
        (Some(pinned), Some(pinned))
    );
    assert_eq!(
        (
            read.priority,
            read.max_attempts,
            read.timeout_seconds,
            read.execution_timeout_seconds
        ),
        (7, 5, 30, Some(120))
    );
    assert_eq!((read.attempts, read.progress_percent), (0, 0));
    assert!(read.lease_id.is_none() && read.started_at.is_none());
    assert_eq!(
        read.trace_parent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    let missing = Uuid::now_v7();
    assert!(matches!(f.queue.get(missing).await, Err(TaskError::NotFound(id)) if id == missing));
}

async fn invalid_task_changes_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let result = f
        .queue
        .create(NewTask {
            priority: 12,
            ..titled("x")
        })
        .await;
    assert!(matches!(result, Err(TaskError::Invalid(_))));
    let (_, total) = f
        .queue
        .list(&TaskFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(total, 0);
}

async fn idempotency_keys_are_per_tenant_and_bound_to_their_request(backend: Backend) {
    let f = fixture(backend).await;
    let keyed = |tenant: &str, title: &str| NewTask {
        idempotency_key: Some(IdempotencyKey {
            tenant: tenant.into(),
            key: "order-42".into(),
        }),
        ..titled(title)
    };
    let (first, created) = f.queue.create(keyed("ada", "first")).await.unwrap();
    assert!(created);
    let (again, created) = f.queue.create(keyed("ada", "first")).await.unwrap();
    assert!(
        !created,
        "the same request with the same key is a resubmission"
    );
    assert_eq!(again, first);
    let reused = f.queue.create(keyed("ada", "second")).await;
    assert!(
        matches!(reused, Err(TaskError::IdempotencyKeyReused)),
        "{reused:?}"
    );
    let (other, created) = f.queue.create(keyed("bob", "first")).await.unwrap();
    assert!(created, "another tenant's key never meets ada's");
    assert_ne!(other.id, first.id);
    let (shared, created) = f.queue.create(keyed("", "first")).await.unwrap();
    assert!(created && shared.id != first.id && shared.id != other.id);
    let (_, total) = f
        .queue
        .list(&TaskFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(total, 3, "the refused reuse created nothing");
    assert_totals_match_rows(&*f.store).await;
}

/// The total a list under `filter` answers.
async fn total(store: &dyn TaskStore, filter: &TaskFilter) -> u64 {
    let page = Page::new(1, 1).unwrap();
    store.list(filter, page).await.unwrap().1
}

/// Checks that every list total the kept counts answer (by status, by user, by both or by
/// neither) equals a count of the rows, before and after the counts are folded.
async fn assert_totals_match_rows(store: &dyn TaskStore) {
    let (tasks, _) = store
        .list(&TaskFilter::default(), Page::new(1, 100).unwrap())
        .await
        .unwrap();
    let mut users: Vec<Option<String>> = tasks.into_iter().map(|task| task.user_id).collect();
    users.push(None);
    users.sort();
    users.dedup();
    let statuses = std::iter::once(None).chain(TaskStatus::ALL.iter().copied().map(Some));
    for folded in [false, true] {
        if folded {
            store.fold_counts().await.unwrap();
        }
        for user_id in &users {
            for status in statuses.clone() {
                let kept = TaskFilter {
                    status,
                    user_id: user_id.clone(),
                    ..TaskFilter::default()
                };
                // Any title filter makes the store count rows.
                let rows = TaskFilter {
                    title_contains: Some(String::new()),
                    ..kept.clone()
                };
                assert_eq!(
                    total(store, &kept).await,
                    total(store, &rows).await,
                    "{kept:?}, folded: {folded}"
                );
            }
        }
    }
}

/// Kept counts stay exact while two folds (two replicas' sweeps) race writers that create,
/// claim and cancel tasks of several users.
async fn kept_counts_stay_exact_while_folds_race_writers(backend: Backend) {
    let f = fixture(backend).await;
    let writing = CancellationToken::new();
    let fold = |store: Arc<CountingStore>, writing: CancellationToken| async move {
        let mut folds = 0;
        while !writing.is_cancelled() || folds == 0 {
            store.fold_counts().await.unwrap();
            folds += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        folds
    };
    let writers = (0..4).map(|writer| {
        let queue = f.queue.clone();
        async move {
            for i in 0..40 {
                let task = NewTask {
                    user_id: Some(format!("user-{}", (writer + i) % 3)),
                    ..titled(&format!("w{writer} t{i}"))
                };
                let (task, _) = queue.create(task).await.unwrap();
                match i % 4 {
                    1 => drop(
                        queue
                            .claim(claim_for(Uuid::now_v7(), &[], 1))
                            .await
                            .unwrap(),
                    ),
                    2 => drop(queue.cancel(task.id).await.unwrap()),
                    _ => {}
                }
            }
        }
    });
    let writes = async {
        futures_util::future::join_all(writers).await;
        writing.cancel();
    };
    let (folds_a, folds_b, ()) = tokio::join!(
        fold(f.store.clone(), writing.clone()),
        fold(f.store.clone(), writing.clone()),
        writes,
    );
    assert!(folds_a > 0 && folds_b > 0);
    assert_eq!(total(&*f.store, &TaskFilter::default()).await, 160);
    assert_totals_match_rows(&*f.store).await;
}

async fn lists_filter_and_paginate_newest_first(backend: Backend) {
    let f = fixture(backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let task = NewTask {
            kind: if i % 2 == 0 { "even" } else { "odd" }.into(),
            user_id: Some(format!("user-{}", i % 2)),
            ..titled(&format!("task {i}"))
        };
        ids.push(f.queue.create(task).await.unwrap().0.id);
    }
    let (page1, total) = f
        .queue
        .list(&TaskFilter::default(), Page::new(1, 2).unwrap())
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        page1.iter().map(|t| t.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let (page3, _) = f
        .queue
        .list(&TaskFilter::default(), Page::new(3, 2).unwrap())
        .await
        .unwrap();
    assert_eq!(page3.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[0]]);

    let even = TaskFilter {
        kind: Some("even".into()),
        ..TaskFilter::default()
    };
    assert_eq!(f.queue.list(&even, Page::default()).await.unwrap().1, 3);
    let user = TaskFilter {
        user_id: Some("user-1".into()),
        ..TaskFilter::default()
    };
    assert_eq!(f.queue.list(&user, Page::default()).await.unwrap().1, 2);

    f.queue
        .create(titled("Quarterly 100% report"))
        .await
        .unwrap();
    f.queue
        .create(titled("quarterly 1000 report"))
        .await
        .unwrap();
    let titled_with = |text: &str| TaskFilter {
        title_contains: Some(text.into()),
        ..TaskFilter::default()
    };
    for (text, matching) in [
        ("TASK", 5),
        ("task 3", 1),
        ("quarterly 100", 2),
        ("100%", 1),
        ("_", 0),
    ] {
        let (_, total) = f
            .queue
            .list(&titled_with(text), Page::default())
            .await
            .unwrap();
        assert_eq!(total, matching, "titles containing {text:?}");
    }

    let agent = Uuid::now_v7();
    let claimed = claim_one(&f.queue, agent).await;
    let active = TaskFilter {
        status: Some(TaskStatus::Active),
        ..TaskFilter::default()
    };
    let (tasks, total) = f.queue.list(&active, Page::default()).await.unwrap();
    assert_eq!((total, tasks[0].id), (1, claimed.id));
    let held = TaskFilter {
        agent_id: Some(agent),
        ..TaskFilter::default()
    };
    assert_eq!(f.queue.list(&held, Page::default()).await.unwrap().1, 1);
    assert_totals_match_rows(&*f.store).await;
}

async fn claims_take_highest_priority_then_oldest(backend: Backend) {
    let f = fixture(backend).await;
    let low_old = f
        .queue
        .create(NewTask {
            priority: 1,
            ..titled("low old")
        })
        .await
        .unwrap()
        .0;
    let high = f
        .queue
        .create(NewTask {
            priority: 9,
            ..titled("high")
        })
        .await
        .unwrap()
        .0;
    let low_new = f
        .queue
        .create(NewTask {
            priority: 1,
            ..titled("low new")
        })
        .await
        .unwrap()
        .0;
    let tasks = f
        .queue
        .claim(claim_for(Uuid::now_v7(), &[], 10))
        .await
        .unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        [high.id, low_old.id, low_new.id]
    );
    assert!(
        f.queue
            .claim(claim_for(Uuid::now_v7(), &[], 10))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn claims_route_by_capability_and_pin(backend: Backend) {
    let f = fixture(backend).await;
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let needs = |caps: &[&str], title: &str| NewTask {
        required_capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        ..titled(title)
    };
    let gpu = f
        .queue
        .create(needs(&["gpu", "python"], "gpu"))
        .await
        .unwrap()
        .0;
    let plain = f.queue.create(needs(&[], "plain")).await.unwrap().0;
    let pinned = f
        .queue
        .create(NewTask {
            pinned_agent_id: Some(bob),
            ..needs(&["never-had"], "for bob")
        })
        .await
        .unwrap()
        .0;

    let for_alice = f
        .queue
        .claim(claim_for(alice, &["python"], 10))
        .await
        .unwrap();
    assert_eq!(
        for_alice.iter().map(|t| t.id).collect::<Vec<_>>(),
        [plain.id]
    );
    let for_bob = f
        .queue
        .claim(claim_for(bob, &["python", "gpu", "extra"], 10))
        .await
        .unwrap();
    let bob_ids: HashSet<Uuid> = for_bob.iter().map(|t| t.id).collect();
    assert_eq!(bob_ids, HashSet::from([gpu.id, pinned.id]));
}

/// Claims look for work one capability set at a time and among the agent's pinned tasks; what
/// they hand out is still the best of all of it, priority first, then age.
async fn claims_take_the_best_across_capability_sets_and_pins(backend: Backend) {
    let f = fixture(backend).await;
    let (agent, other) = (Uuid::now_v7(), Uuid::now_v7());
    let create = |caps: &[&str], priority: i32, pinned_agent_id: Option<Uuid>| NewTask {
        required_capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        priority,
        pinned_agent_id,
        ..titled("work")
    };
    let mut expected = Vec::new();
    for (caps, priority, pinned, takeable) in [
        (&["c"][..], 9, None, false),
        (&["zz"][..], 8, Some(other), false),
        (&["zz"][..], 7, Some(agent), true),
        (&["a"][..], 5, None, true),
        (&["a"][..], 5, None, true),
        (&["a", "b"][..], 6, None, true),
        (&[][..], 1, None, true),
        (&["a"][..], 5, None, true),
    ] {
        let task = f
            .queue
            .create(create(caps, priority, pinned))
            .await
            .unwrap()
            .0;
        if takeable {
            expected.push((-priority, task.created_at, task.id));
        }
    }
    expected.sort_unstable();
    let expected: Vec<Uuid> = expected.into_iter().map(|(_, _, id)| id).collect();

    let first = f
        .queue
        .claim(claim_for(agent, &["b", "a"], 3))
        .await
        .unwrap();
    let rest = f
        .queue
        .claim(claim_for(agent, &["a", "b"], 10))
        .await
        .unwrap();
    let claimed: Vec<Uuid> = first.iter().chain(&rest).map(|t| t.id).collect();
    assert_eq!(first.len(), 3);
    assert_eq!(claimed, expected);
}

async fn claims_never_exceed_the_agents_concurrency(backend: Backend) {
    let f = fixture(backend).await;
    for i in 0..5 {
        f.queue.create(titled(&format!("t{i}"))).await.unwrap();
    }
    let agent = Uuid::now_v7();
    let limited = |max_tasks| Claim {
        max_concurrency: 3,
        ..claim_for(agent, &[], max_tasks)
    };
    assert_eq!(f.queue.claim(limited(2)).await.unwrap().len(), 2);
    assert_eq!(
        f.queue.claim(limited(10)).await.unwrap().len(),
        1,
        "one slot was free"
    );
    assert!(
        f.queue.claim(limited(10)).await.unwrap().is_empty(),
        "no slot is free"
    );
    assert_eq!(
        f.queue
            .count_active(&[agent, Uuid::now_v7()])
            .await
            .unwrap(),
        [(agent, 3)]
    );
    assert_eq!(
        f.queue.count_by_status().await.unwrap(),
        [
            (TaskStatus::Waiting, 0),
            (TaskStatus::Scheduled, 0),
            (TaskStatus::Queued, 2),
            (TaskStatus::Active, 3),
            (TaskStatus::Completed, 0),
            (TaskStatus::Failed, 0),
            (TaskStatus::Cancelled, 0),
        ]
    );

    let held = f
        .queue
        .list(
            &TaskFilter {
                agent_id: Some(agent),
                ..TaskFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap()
        .0;
    f.queue
        .complete(held[0].id, lease_of(&held[0]), String::new())
        .await
        .unwrap();
    assert_eq!(
        f.queue.claim(limited(10)).await.unwrap().len(),
        1,
        "a finished task frees its slot"
    );
}

/// Claims that do not wait, made together by the slots of one agent, share claim statements:
/// each gets at most what it asked, no task goes to two claims, and together they take no more
/// than the agent's free slots; another agent's claims among them are answered apart.
async fn claims_made_together_share_statements_and_respect_concurrency(backend: Backend) {
    let f = fixture(backend).await;
    for i in 0..12 {
        f.queue.create(titled(&format!("t{i}"))).await.unwrap();
    }
    let (busy, other) = (Uuid::now_v7(), Uuid::now_v7());
    let limited = |agent_id, max_tasks| Claim {
        max_concurrency: 5,
        ..claim_for(agent_id, &[], max_tasks)
    };
    // A process's first claim looks for due scheduled tasks, which would spread the claims
    // below apart in time: one made beforehand lets them arrive together.
    let first = f.queue.claim_now(limited(Uuid::now_v7(), 1)).await.unwrap();
    assert_eq!(first.len(), 1);
    let before = f.store.claims();
    // The busy agent asks for seven tasks in all, with five slots.
    let asks = [(busy, 1), (busy, 2), (busy, 1), (busy, 3), (other, 2)];
    let answers = futures_util::future::join_all(
        asks.iter()
            .map(|&(agent_id, max_tasks)| f.queue.claim_now(limited(agent_id, max_tasks))),
    )
    .await;
    let statements = f.store.claims() - before;
    let mut seen = HashSet::new();
    let mut busy_took = 0;
    for (&(agent_id, asked), answer) in asks.iter().zip(answers) {
        let tasks = answer.unwrap();
        assert!(
            tasks.len() <= asked as usize,
            "{} tasks for {asked}",
            tasks.len()
        );
        for task in &tasks {
            assert_eq!(task.agent_id, Some(agent_id));
            assert!(seen.insert(task.id), "a task went to two claims");
        }
        if agent_id == busy {
            busy_took += tasks.len();
        }
    }
    assert_eq!(
        busy_took, 5,
        "the busy agent fills its five slots and no more"
    );
    assert_eq!(seen.len(), 7);
    assert!(
        statements < asks.len(),
        "{statements} claim statements for {} claims",
        asks.len()
    );
    let invalid = f.queue.claim_now(limited(busy, 0)).await.unwrap_err();
    assert!(matches!(invalid, TaskError::Invalid(_)), "{invalid}");
    assert_totals_match_rows(f.store.as_ref()).await;
}

/// A registry that, like the agents service, answers at most 1,000 agents per question, and
/// knows every agent but the ones it was told are offline.
struct Registry {
    offline: HashSet<Uuid>,
}

#[async_trait::async_trait]
impl AgentDirectory for Registry {
    async fn profile(&self, _: Uuid) -> Result<AgentProfile, TaskError> {
        unreachable!("the sweep asks only about liveness")
    }

    async fn online(&self, agent_ids: &[Uuid]) -> Result<HashSet<Uuid>, TaskError> {
        if agent_ids.len() > 1000 {
            return Err(TaskError::Invalid("at most 1000 agent ids".into()));
        }
        Ok(agent_ids
            .iter()
            .filter(|id| !self.offline.contains(id))
            .copied()
            .collect())
    }
}

async fn the_liveness_sweep_handles_thousands_of_busy_agents(backend: Backend) {
    const AGENTS: usize = 2_500;
    let f = fixture(backend).await;
    let mut offline = HashSet::new();
    for i in 0..AGENTS {
        f.queue.create(titled(&format!("t{i}"))).await.unwrap();
        let agent = Uuid::now_v7();
        claim_one(&f.queue, agent).await;
        if i % 100 == 0 {
            offline.insert(agent);
        }
    }
    let dispatcher = Dispatcher::new(f.queue.clone(), Arc::new(Registry { offline }));
    assert_eq!(
        dispatcher.requeue_tasks_of_lost_agents().await.unwrap(),
        AGENTS / 100
    );
    assert_eq!(
        f.queue.active_agents().await.unwrap().len(),
        AGENTS - AGENTS / 100
    );
}

async fn tasks_of_a_lost_agent_return_to_the_queue(backend: Backend) {
    let f = fixture(backend).await;
    f.queue.create(titled("a")).await.unwrap();
    f.queue
        .create(NewTask {
            max_attempts: 1,
            ..titled("b")
        })
        .await
        .unwrap();
    let (lost, other) = (Uuid::now_v7(), Uuid::now_v7());
    let held = f.queue.claim(claim_for(lost, &[], 2)).await.unwrap();
    f.queue.create(titled("c")).await.unwrap();
    claim_one(&f.queue, other).await;
    assert_eq!(f.queue.active_agents().await.unwrap().len(), 2);

    assert_eq!(
        f.queue
            .requeue_agent_tasks(lost, "agent went offline")
            .await
            .unwrap(),
        2
    );
    let a = f
        .queue
        .get(held.iter().find(|t| t.title == "a").unwrap().id)
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.agent_id, a.error.as_deref()),
        (TaskStatus::Queued, None, Some("agent went offline"))
    );
    let b = f
        .queue
        .get(held.iter().find(|t| t.title == "b").unwrap().id)
        .await
        .unwrap();
    assert_eq!(b.status, TaskStatus::Failed, "out of attempts");
    assert_eq!(f.queue.active_agents().await.unwrap(), [other]);
    let late = f
        .queue
        .complete(a.id, lease_of(&held[0]), String::new())
        .await;
    assert!(late.is_err());
    assert_totals_match_rows(&*f.store).await;
}

async fn each_claim_is_a_new_attempt_with_a_fresh_lease(backend: Backend) {
    let f = fixture(backend).await;
    let created = f
        .queue
        .create(NewTask {
            timeout_seconds: 30,
            ..titled("t")
        })
        .await
        .unwrap()
        .0;
    let agent = Uuid::now_v7();
    let first = claim_one(&f.queue, agent).await;
    assert_eq!(first.id, created.id);
    assert_eq!(
        (first.status, first.attempts, first.agent_id),
        (TaskStatus::Active, 1, Some(agent))
    );
    let expires = first.lease_expires_at.unwrap();
    assert!(expires >= first.started_at.unwrap() + 30_000);

    let failed = f
        .queue
        .fail(first.id, lease_of(&first), "flaky".into(), true)
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Queued);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = claim_one(&f.queue, agent).await;
    assert_eq!(second.attempts, 2);
    assert_ne!(second.lease_id, first.lease_id);
    // The first attempt's lease is stale even though the agent is the same.
    let stale = f
        .queue
        .complete(first.id, lease_of(&first), "1".into())
        .await;
    assert!(
        matches!(stale, Err(TaskError::NotLeaseHolder { .. })),
        "{stale:?}"
    );
}

async fn only_the_lease_holder_may_report(backend: Backend) {
    let f = fixture(backend).await;
    f.queue.create(titled("t")).await.unwrap();
    let task = claim_one(&f.queue, Uuid::now_v7()).await;
    let intruder = LeaseRef {
        agent_id: Uuid::now_v7(),
        lease_id: None,
    };
    for refused in [
        f.queue.progress(task.id, intruder, 10, None).await,
        f.queue.complete(task.id, intruder, String::new()).await,
        f.queue.fail(task.id, intruder, "no".into(), true).await,
    ] {
        assert!(
            matches!(refused, Err(TaskError::NotLeaseHolder { .. })),
            "{refused:?}"
        );
    }
    let unchanged = f.queue.get(task.id).await.unwrap();
    assert_eq!(unchanged, task);
}

async fn progress_renews_the_lease(backend: Backend) {
    let f = fixture(backend).await;
    f.queue.create(titled("t")).await.unwrap();
    let task = claim_one(&f.queue, Uuid::now_v7()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let moved = f
        .queue
        .progress(task.id, lease_of(&task), 40, Some("halfway".into()))
        .await
        .unwrap();
    assert_eq!(
        (moved.progress_percent, moved.progress_message.as_deref()),
        (40, Some("halfway"))
    );
    assert!(moved.lease_expires_at.unwrap() > task.lease_expires_at.unwrap());
    let bad = f.queue.progress(task.id, lease_of(&task), 101, None).await;
    assert!(matches!(bad, Err(TaskError::Invalid(_))));
}

async fn completion_is_accepted_once(backend: Backend) {
    let f = fixture(backend).await;
    f.queue.create(titled("t")).await.unwrap();
    let task = claim_one(&f.queue, Uuid::now_v7()).await;
    let done = f
        .queue
        .complete(task.id, lease_of(&task), r#"{"ok":true}"#.into())
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(done.progress_percent, 100);
    assert!(done.finished_at.is_some() && done.lease_expires_at.is_none());
    let again = f.queue.complete(task.id, lease_of(&task), "2".into()).await;
    assert!(matches!(
        again,
        Err(TaskError::OutcomeDiffers {
            status: TaskStatus::Completed,
            ..
        })
    ));
    let failed_instead = f
        .queue
        .fail(task.id, lease_of(&task), "no".into(), true)
        .await;
    assert!(matches!(
        failed_instead,
        Err(TaskError::OutcomeDiffers { .. })
    ));
    let stranger = LeaseRef {
        agent_id: Uuid::now_v7(),
        lease_id: None,
    };
    let by_stranger = f
        .queue
        .complete(task.id, stranger, r#"{"ok":true}"#.into())
        .await;
    assert!(matches!(by_stranger, Err(TaskError::WrongStatus { .. })));
    let bad_json = f.queue.complete(task.id, lease_of(&task), "{".into()).await;
    assert!(matches!(bad_json, Err(TaskError::Invalid(_))));
    assert_eq!(
        f.queue.get(task.id).await.unwrap(),
        done,
        "refusals changed nothing"
    );
}

async fn a_repeated_report_gets_the_same_answer(backend: Backend) {
    let f = fixture(backend).await;
    let agent = Uuid::now_v7();
    f.queue.create(titled("done")).await.unwrap();
    let task = claim_one(&f.queue, agent).await;
    let done = f
        .queue
        .complete(task.id, lease_of(&task), r#"{"n": 1}"#.into())
        .await
        .unwrap();
    for lease in [
        lease_of(&task),
        LeaseRef {
            agent_id: agent,
            lease_id: None,
        },
    ] {
        let again = f.queue.complete(task.id, lease, r#"{"n": 1}"#.into()).await;
        assert_eq!(again.unwrap(), done, "the answer that was lost, again");
    }

    f.queue
        .create(NewTask {
            max_attempts: 2,
            ..titled("failing")
        })
        .await
        .unwrap();
    let first = claim_one(&f.queue, agent).await;
    let requeued = f
        .queue
        .fail(first.id, lease_of(&first), "boom".into(), true)
        .await
        .unwrap();
    assert_eq!(requeued.status, TaskStatus::Queued);
    let repeated = f
        .queue
        .fail(first.id, lease_of(&first), "boom".into(), true)
        .await
        .unwrap();
    assert_eq!(
        (repeated.status, repeated.attempts),
        (TaskStatus::Queued, 1)
    );
    let other_error = f
        .queue
        .fail(first.id, lease_of(&first), "bang".into(), true)
        .await;
    assert!(matches!(other_error, Err(TaskError::OutcomeDiffers { .. })));
}

async fn heartbeats_renew_listed_tasks_and_take_back_unlisted_ones(backend: Backend) {
    let f = fixture(backend).await;
    let agent = Uuid::now_v7();
    for title in ["kept", "lost", "cancelled"] {
        f.queue
            .create(NewTask {
                timeout_seconds: 60,
                ..titled(title)
            })
            .await
            .unwrap();
    }
    let held = f.queue.claim(claim_for(agent, &[], 3)).await.unwrap();
    let [kept, lost, cancelled] = [0, 1, 2].map(|i| held[i].clone());
    f.queue.cancel(cancelled.id).await.unwrap();

    // Just claimed: a heartbeat that does not list a task yet leaves it alone.
    let synced = f.queue.sync_held(agent, &[kept.id]).await.unwrap();
    assert!(synced.released.is_empty());
    assert_eq!(
        f.queue.get(lost.id).await.unwrap().status,
        TaskStatus::Active
    );

    // Past the grace period, the unlisted task goes back; the listed ones are renewed, and
    // the cancelled one is named.
    tokio::time::sleep(swarm_tasks::domain::queue::CLAIM_ANSWER_GRACE + Duration::from_millis(100))
        .await;
    let synced = f
        .queue
        .sync_held(agent, &[kept.id, cancelled.id])
        .await
        .unwrap();
    assert_eq!(synced.released, [lost.id]);
    assert_eq!(synced.cancelled, [cancelled.id]);
    let taken_back = f.queue.get(lost.id).await.unwrap();
    assert_eq!(taken_back.status, TaskStatus::Queued);
    assert!(taken_back.error.unwrap().contains("does not hold"));
    let renewed = f.queue.get(kept.id).await.unwrap();
    assert_eq!(renewed.status, TaskStatus::Active);
    assert!(renewed.lease_expires_at.unwrap() > kept.lease_expires_at.unwrap());
    let late = f.queue.complete(lost.id, lease_of(&lost), "1".into()).await;
    assert!(late.is_err(), "the lost attempt's report is refused");

    let stranger = f.queue.sync_held(Uuid::now_v7(), &[kept.id]).await.unwrap();
    assert!(stranger.released.is_empty());
    assert_eq!(
        stranger.cancelled,
        [kept.id],
        "told to stop what it does not hold"
    );
    assert_eq!(
        f.queue.get(kept.id).await.unwrap().lease_expires_at,
        renewed.lease_expires_at,
        "another agent's listing renews nothing"
    );
    assert_totals_match_rows(&*f.store).await;
}

/// Creates a task with two attempts, has an agent claim it and fail its first attempt (a
/// retryable "boom"); returns the agent and the task as it was requeued.
async fn failed_once(queue: &TaskQueue) -> (Uuid, Task) {
    queue
        .create(NewTask {
            max_attempts: 2,
            ..titled("t")
        })
        .await
        .unwrap();
    let agent = Uuid::now_v7();
    let first = claim_one(queue, agent).await;
    let requeued = queue
        .fail(first.id, lease_of(&first), "boom".into(), true)
        .await
        .unwrap();
    (agent, requeued)
}

async fn failures_retry_with_backoff_until_attempts_run_out(backend: Backend) {
    let f = fixture(backend).await;
    let (agent, requeued) = failed_once(&f.queue).await;
    assert_eq!(requeued.status, TaskStatus::Queued);
    assert_eq!(requeued.error.as_deref(), Some("boom"));
    assert_eq!(requeued.agent_id, None);
    // Backoff: 200 ms base with jitter means at least 100 ms before it is claimable.
    assert!(requeued.available_at >= requeued.updated_at + 100);
    assert!(
        f.queue
            .claim(claim_for(agent, &[], 1))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = claim_one(&f.queue, agent).await;
    let failed = f
        .queue
        .fail(second.id, lease_of(&second), "boom again".into(), true)
        .await
        .unwrap();
    assert_eq!((failed.status, failed.attempts), (TaskStatus::Failed, 2));
    assert!(failed.finished_at.is_some());
    assert_totals_match_rows(&*f.store).await;
}

async fn permanent_failures_do_not_retry(backend: Backend) {
    let f = fixture(backend).await;
    f.queue.create(titled("t")).await.unwrap();
    let task = claim_one(&f.queue, Uuid::now_v7()).await;
    let failed = f
        .queue
        .fail(task.id, lease_of(&task), "bad input".into(), false)
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    let empty = f
        .queue
        .fail(task.id, lease_of(&task), " ".into(), false)
        .await;
    assert!(matches!(empty, Err(TaskError::Invalid(_))));
}

async fn expired_leases_return_to_the_queue(backend: Backend) {
    let f = fixture(backend).await;
    f.queue
        .create(NewTask {
            timeout_seconds: 1,
            max_attempts: 2,
            ..titled("t")
        })
        .await
        .unwrap();
    let (first_agent, second_agent) = (Uuid::now_v7(), Uuid::now_v7());
    let first = claim_one(&f.queue, first_agent).await;
    assert_eq!(f.queue.sweep_expired_leases().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(f.queue.sweep_expired_leases().await.unwrap(), 1);
    let requeued = f.queue.get(first.id).await.unwrap();
    assert_eq!(
        (requeued.status, requeued.agent_id),
        (TaskStatus::Queued, None)
    );
    assert_eq!(requeued.error.as_deref(), Some("lease expired"));

    let second = claim_one(&f.queue, second_agent).await;
    assert_eq!(second.attempts, 2);
    let late = f
        .queue
        .complete(first.id, lease_of(&first), String::new())
        .await;
    assert!(
        matches!(late, Err(TaskError::NotLeaseHolder { .. })),
        "{late:?}"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.queue.sweep_expired_leases().await.unwrap();
    let exhausted = f.queue.get(first.id).await.unwrap();
    assert_eq!(exhausted.status, TaskStatus::Failed);
    assert_eq!(exhausted.agent_id, Some(second_agent));
    assert_totals_match_rows(&*f.store).await;
}

async fn an_attempt_ends_at_its_execution_bound_however_often_renewed(backend: Backend) {
    let f = fixture(backend).await;
    for bound in [0, 604_801] {
        let refused = f
            .queue
            .create(NewTask {
                execution_timeout_seconds: Some(bound),
                ..titled("t")
            })
            .await;
        assert!(
            matches!(&refused, Err(TaskError::Invalid(m)) if m.contains("execution_timeout_seconds")),
            "{refused:?}"
        );
    }
    let (task, _) = f
        .queue
        .create(NewTask {
            timeout_seconds: 60,
            execution_timeout_seconds: Some(1),
            max_attempts: 2,
            ..titled("bounded")
        })
        .await
        .unwrap();
    let agent = Uuid::now_v7();
    let claimed = claim_one(&f.queue, agent).await;
    let bound = claimed.started_at.unwrap() + 1000;
    assert_eq!(claimed.lease_expires_at, Some(bound));
    let moved = f
        .queue
        .progress(task.id, lease_of(&claimed), 50, None)
        .await
        .unwrap();
    assert_eq!(
        moved.lease_expires_at,
        Some(bound),
        "progress renews up to the bound"
    );
    f.queue.sync_held(agent, &[task.id]).await.unwrap();
    assert_eq!(
        f.queue.get(task.id).await.unwrap().lease_expires_at,
        Some(bound),
        "a heartbeat renews up to the bound"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(f.queue.sweep_expired_leases().await.unwrap(), 1);
    let requeued = f.queue.get(task.id).await.unwrap();
    assert_eq!(
        requeued.status,
        TaskStatus::Queued,
        "the second attempt may run"
    );
    assert_eq!(requeued.error.as_deref(), Some("execution timed out"));
    let synced = f.queue.sync_held(agent, &[task.id]).await.unwrap();
    assert_eq!(
        synced.cancelled,
        [task.id],
        "the overrunning agent is told to stop"
    );
    let (attempts, _) = f.queue.attempts(task.id, Page::default()).await.unwrap();
    assert_eq!(attempts[0].outcome, AttemptOutcome::TimedOut);
    assert_eq!(attempts[0].error.as_deref(), Some("execution timed out"));

    // The last attempt that overruns fails the task.
    let last = claim_one(&f.queue, agent).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.queue.sweep_expired_leases().await.unwrap();
    let failed = f.queue.get(last.id).await.unwrap();
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (TaskStatus::Failed, Some("execution timed out")),
        "the last attempt's overrun fails the task"
    );
}

async fn cancellation_stops_queued_and_active_tasks(backend: Backend) {
    let f = fixture(backend).await;
    let queued = f.queue.create(titled("queued")).await.unwrap().0;
    assert_eq!(
        f.queue.cancel(queued.id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    assert!(matches!(
        f.queue.cancel(queued.id).await,
        Err(TaskError::WrongStatus {
            status: TaskStatus::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        f.queue.cancel(Uuid::now_v7()).await,
        Err(TaskError::NotFound(_))
    ));

    f.queue.create(titled("active")).await.unwrap();
    let active = claim_one(&f.queue, Uuid::now_v7()).await;
    f.queue.cancel(active.id).await.unwrap();
    let late = f
        .queue
        .complete(active.id, lease_of(&active), String::new())
        .await;
    assert!(matches!(
        late,
        Err(TaskError::WrongStatus {
            status: TaskStatus::Cancelled,
            ..
        })
    ));
    assert_totals_match_rows(&*f.store).await;
}

async fn messages_form_a_conversation(backend: Backend) {
    let f = fixture(backend).await;
    let a = f.queue.create(titled("a")).await.unwrap().0;
    let b = f.queue.create(titled("b")).await.unwrap().0;
    let say = |task_id: Uuid, role: MessageRole, content: &str| NewMessage {
        task_id,
        sender: "someone".into(),
        role,
        content: content.into(),
    };
    f.queue
        .add_message(say(a.id, MessageRole::User, "hello"))
        .await
        .unwrap();
    f.queue
        .add_message(say(b.id, MessageRole::System, "elsewhere"))
        .await
        .unwrap();
    f.queue
        .add_message(say(a.id, MessageRole::Agent, "hi back"))
        .await
        .unwrap();

    let (thread, total) = f
        .queue
        .list_messages(MessageScope::Task(a.id), Page::default())
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        thread
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["hello", "hi back"]
    );
    assert_eq!(thread[1].role, MessageRole::Agent);
    let (recent, total) = f
        .queue
        .list_messages(
            MessageScope::Recent { user_id: None },
            Page::new(1, 2).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(total, 3);
    assert_eq!(
        recent
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["hi back", "elsewhere"]
    );

    let ada = f
        .queue
        .create(NewTask {
            user_id: Some("ada".into()),
            ..titled("ada's")
        })
        .await
        .unwrap()
        .0;
    f.queue
        .add_message(say(ada.id, MessageRole::User, "mine"))
        .await
        .unwrap();
    let mine = MessageScope::Recent {
        user_id: Some("ada".into()),
    };
    let (recent, total) = f.queue.list_messages(mine, Page::default()).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(recent[0].content, "mine");

    let ghost = Uuid::now_v7();
    assert!(matches!(
        f.queue
            .add_message(say(ghost, MessageRole::User, "?"))
            .await,
        Err(TaskError::NotFound(_))
    ));
    assert!(matches!(
        f.queue
            .list_messages(MessageScope::Task(ghost), Page::default())
            .await,
        Err(TaskError::NotFound(_))
    ));
}

async fn racing_claimers_never_share_an_attempt(backend: Backend) {
    const TASKS: usize = 300;
    const CLAIMERS: usize = 12;
    let f = fixture(backend).await;
    for i in 0..TASKS {
        f.queue.create(titled(&format!("t{i}"))).await.unwrap();
    }
    let mut claimers = Vec::new();
    for _ in 0..CLAIMERS {
        let queue = f.queue.clone();
        claimers.push(tokio::spawn(async move {
            let agent = Uuid::now_v7();
            let mut won = Vec::new();
            loop {
                let tasks = queue.claim(claim_for(agent, &[], 7)).await.unwrap();
                if tasks.is_empty() {
                    return won;
                }
                won.extend(tasks.into_iter().map(|t| (t.id, t.attempts, t.lease_id)));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut leases = HashSet::new();
    for claimer in claimers {
        for (id, attempt, lease) in claimer.await.unwrap() {
            assert_eq!(attempt, 1);
            assert!(seen.insert(id), "task {id} was handed out twice");
            assert!(leases.insert(lease.unwrap()));
        }
    }
    assert_eq!(seen.len(), TASKS);
}

async fn long_polling_claims_wake_when_work_arrives(backend: Backend) {
    let f = fixture(backend).await;
    let queue = f.queue.clone();
    let waiter = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let claim = Claim {
            wait: Duration::from_secs(10),
            ..claim_for(Uuid::now_v7(), &[], 1)
        };
        (queue.claim(claim).await.unwrap(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = f.queue.create(titled("wake up")).await.unwrap().0;
    let (tasks, waited) = waiter.await.unwrap();
    assert_eq!(tasks[0].id, created.id);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");

    let started = tokio::time::Instant::now();
    let claim = Claim {
        wait: Duration::from_millis(300),
        ..claim_for(Uuid::now_v7(), &[], 1)
    };
    assert!(f.queue.claim(claim).await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

async fn watchers_see_every_change_until_the_end(backend: Backend) {
    let f = fixture(backend).await;
    let task = f.queue.create(titled("watched")).await.unwrap().0;
    let mut attentive = f.queue.watch(task.id).await.unwrap();
    let mut slow = f.queue.watch(task.id).await.unwrap();
    let mut next = async || {
        let state = tokio::time::timeout(Duration::from_secs(5), attentive.recv())
            .await
            .expect("a change arrives")
            .map(|state| state.unwrap());
        state.map(|state| (state.status, state.progress_percent))
    };
    assert_eq!(next().await, Some((TaskStatus::Queued, 0)));
    let claimed = claim_one(&f.queue, Uuid::now_v7()).await;
    assert_eq!(next().await, Some((TaskStatus::Active, 0)));
    f.queue
        .progress(task.id, lease_of(&claimed), 50, None)
        .await
        .unwrap();
    assert_eq!(next().await, Some((TaskStatus::Active, 50)));
    f.queue
        .complete(task.id, lease_of(&claimed), String::new())
        .await
        .unwrap();
    assert_eq!(next().await, Some((TaskStatus::Completed, 100)));
    assert_eq!(next().await, None, "the watch ends after the final status");

    // A watcher that read nothing meanwhile skips to the newest state, never back.
    let mut updated = Vec::new();
    while let Some(state) = slow.recv().await {
        updated.push(state.unwrap().updated_at);
    }
    assert!(updated.len() >= 2 && updated.is_sorted(), "{updated:?}");
    assert!(matches!(
        f.queue.watch(Uuid::now_v7()).await,
        Err(TaskError::NotFound(_))
    ));
}

async fn watchers_see_changes_another_replica_makes(backend: Backend) {
    let f = fixture(backend).await;
    let other = replica(&f.database, f.store.clone(), Clock::new()).await;
    let task = f.queue.create(titled("watched here")).await.unwrap().0;
    let mut states = f.queue.watch(task.id).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), states.recv())
            .await
            .expect("a change arrives")
            .map(|state| state.unwrap().status)
    };
    assert_eq!(next().await, Some(TaskStatus::Queued));
    // The other replica's clock may stand a millisecond behind the one that stamped the task
    // ready, so its claim waits for the task rather than asking only once.
    let waiting = Claim {
        wait: Duration::from_secs(5),
        ..claim_for(Uuid::now_v7(), &[], 1)
    };
    let claimed = other.claim(waiting).await.unwrap().remove(0);
    assert_eq!(next().await, Some(TaskStatus::Active));
    other
        .complete(task.id, lease_of(&claimed), String::new())
        .await
        .unwrap();
    assert_eq!(next().await, Some(TaskStatus::Completed));
    assert_eq!(next().await, None);
}

async fn watchers_are_capped_and_slow_ones_dropped(backend: Backend) {
    let f = fixture(backend).await;
    let task = f.queue.create(titled("watched")).await.unwrap().0;
    let mut watches = Vec::new();
    for _ in 0..test_settings().max_watchers {
        watches.push(f.queue.watch(task.id).await.unwrap());
    }
    assert!(matches!(
        f.queue.watch(task.id).await,
        Err(TaskError::TooManyWatchers { limit: 4 })
    ));
    drop(watches.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut slow = f
        .queue
        .watch(task.id)
        .await
        .expect("a freed place is taken");
    // Each watcher's first state waits in its channel; the claim cannot be handed over until
    // that is read, and no watcher reads within the limit.
    claim_one(&f.queue, Uuid::now_v7()).await;
    tokio::time::sleep(test_settings().slow_watcher_limit * 2).await;
    assert_eq!(
        slow.recv().await.unwrap().unwrap().status,
        TaskStatus::Queued
    );
    assert!(slow.recv().await.is_none(), "a slow watcher's watch ends");
    assert_eq!(
        f.queue.watcher_count(),
        0,
        "slow watchers give their places back"
    );
}

async fn one_new_task_wakes_one_waiting_claim(backend: Backend) {
    const WAITERS: usize = 8;
    let f = fixture(backend).await;
    let mut waiting = Vec::new();
    for _ in 0..WAITERS {
        let queue = f.queue.clone();
        waiting.push(tokio::spawn(async move {
            let claim = Claim {
                wait: Duration::from_secs(3),
                ..claim_for(Uuid::now_v7(), &["cpu"], 1)
            };
            queue.claim(claim).await.unwrap()
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.store.claims(),
        WAITERS,
        "waiting claims look once, not once per poll interval"
    );
    f.queue
        .create(NewTask {
            required_capabilities: vec!["gpu".into()],
            ..titled("nobody waits for this")
        })
        .await
        .unwrap();
    let task = f
        .queue
        .create(NewTask {
            required_capabilities: vec!["cpu".into()],
            ..titled("one of them takes this")
        })
        .await
        .unwrap()
        .0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.store.claims(), WAITERS + 1, "the new task woke one claim");
    let mut taken = Vec::new();
    for waiter in waiting {
        taken.extend(waiter.await.unwrap());
    }
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, task.id);
}

async fn work_that_becomes_ready_later_wakes_a_waiting_claim(backend: Backend) {
    let f = fixture(backend).await;
    let (agent, _) = failed_once(&f.queue).await;
    let claim = Claim {
        wait: Duration::from_secs(5),
        ..claim_for(agent, &[], 1)
    };
    let started = tokio::time::Instant::now();
    let retried = f.queue.claim(claim).await.unwrap();
    assert_eq!(
        retried.len(),
        1,
        "the retry is handed out once its backoff ends"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

async fn replicas_with_skewed_clocks_agree_on_leases(backend: Backend) {
    const TEN_MINUTES: i64 = 600_000;
    let f = fixture(backend).await;
    let ahead = replica(&f.database, f.store.clone(), Clock::skewed(TEN_MINUTES)).await;
    let behind = replica(&f.database, f.store.clone(), Clock::skewed(-TEN_MINUTES)).await;
    f.queue
        .create(NewTask {
            timeout_seconds: 60,
            ..titled("held")
        })
        .await
        .unwrap();
    // Replicas agree on time to within a round trip to the database: a task created on one
    // may become claimable on another a moment later, so this claim may wait a little.
    let claim = Claim {
        wait: Duration::from_secs(2),
        ..claim_for(Uuid::now_v7(), &[], 1)
    };
    let claimed = behind.claim(claim).await.unwrap().remove(0);
    assert_eq!(
        ahead.sweep_expired_leases().await.unwrap(),
        0,
        "a replica whose clock runs ten minutes ahead sees the lease as the others do"
    );
    // Each replica's offset to the database clock is measured to within a round trip, so
    // the two readings may differ by a few milliseconds either way.
    let expires_in = claimed.lease_expires_at.unwrap() - f.queue.now_millis();
    assert!((55_000..=60_100).contains(&expires_in), "{expires_in}");
    let due = ahead
        .create(NewTask {
            max_attempts: 2,
            ..titled("retried")
        })
        .await
        .unwrap()
        .0;
    assert!((due.created_at - f.queue.now_millis()).abs() < 5_000);
}

async fn finished_tasks_are_pruned_after_retention(backend: Backend) {
    let f = fixture(backend).await;
    let finished = f.queue.create(titled("old")).await.unwrap().0;
    f.queue.cancel(finished.id).await.unwrap();
    let open = f.queue.create(titled("open")).await.unwrap().0;
    f.queue
        .add_message(NewMessage {
            task_id: finished.id,
            sender: "s".into(),
            role: MessageRole::User,
            content: "c".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        f.queue
            .prune_finished(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(f.queue.prune_finished(Duration::ZERO).await.unwrap(), 1);
    assert!(matches!(
        f.queue.get(finished.id).await,
        Err(TaskError::NotFound(_))
    ));
    assert!(f.queue.get(open.id).await.is_ok());
    assert_eq!(
        f.queue
            .list_messages(MessageScope::Recent { user_id: None }, Page::default())
            .await
            .unwrap()
            .1,
        0
    );
    assert_totals_match_rows(&*f.store).await;
}

/// A prune larger than one batch deletes every task past retention, statement by statement,
/// and leaves the rest.
async fn large_prunes_run_in_batches_to_the_end(backend: Backend) {
    let f = fixture(backend).await;
    let old = 1_200; // more than two batches
    for _ in 0..old / 400 {
        let created = f.queue.create_many(vec![titled("old"); 400]).await.unwrap();
        for task in created {
            f.queue.cancel(task.id).await.unwrap();
        }
    }
    let open = f.queue.create(titled("open")).await.unwrap().0;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(f.queue.prune_finished(Duration::ZERO).await.unwrap(), old);
    let (left, total) = f
        .queue
        .list(&TaskFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(left[0].id, open.id);
}

/// Waits until the queue's clock reads `millis`.
async fn sleep_until_millis(queue: &TaskQueue, millis: i64) {
    let left = u64::try_from(millis - queue.now_millis()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(left)).await;
}

async fn delayed_tasks_are_claimable_on_time_and_not_before(backend: Backend) {
    let f = fixture(backend).await;
    let run_at = f.queue.now_millis() + 1_500;
    let (task, _) = f
        .queue
        .create(NewTask {
            run_at: Some(run_at),
            ..titled("later")
        })
        .await
        .unwrap();
    assert_eq!(
        (task.status, task.available_at),
        (TaskStatus::Scheduled, run_at)
    );
    let scheduled = TaskFilter {
        status: Some(TaskStatus::Scheduled),
        ..TaskFilter::default()
    };
    assert_eq!(
        f.queue.list(&scheduled, Page::default()).await.unwrap().1,
        1
    );
    let agent = Uuid::now_v7();
    sleep_until_millis(&f.queue, run_at - 1_000).await;
    let early = f.queue.claim(claim_for(agent, &[], 1)).await.unwrap();
    assert!(early.is_empty(), "one second early, nothing is handed out");

    sleep_until_millis(&f.queue, run_at + 100).await;
    let on_time = f.queue.claim(claim_for(agent, &[], 1)).await.unwrap();
    assert_eq!(
        on_time.iter().map(|t| t.id).collect::<Vec<_>>(),
        [task.id],
        "100 ms after its time, it is claimable"
    );
    assert_totals_match_rows(&*f.store).await;
}

async fn a_waiting_claim_gets_a_delayed_task_on_time(backend: Backend) {
    let f = fixture(backend).await;
    let (task, _) = f
        .queue
        .create(NewTask {
            delay_seconds: Some(1),
            ..titled("in a second")
        })
        .await
        .unwrap();
    let waiting = Claim {
        wait: Duration::from_secs(5),
        ..claim_for(Uuid::now_v7(), &[], 1)
    };
    let claimed = f.queue.claim(waiting).await.unwrap();
    let late_by = f.queue.now_millis() - task.available_at;
    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), [task.id]);
    assert!(
        (0..250).contains(&late_by),
        "woken {late_by} ms after its time"
    );
}

async fn scheduled_tasks_can_be_cancelled(backend: Backend) {
    let f = fixture(backend).await;
    let (task, _) = f
        .queue
        .create(NewTask {
            delay_seconds: Some(60),
            ..titled("never mind")
        })
        .await
        .unwrap();
    let cancelled = f.queue.cancel(task.id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    let (attempts, total) = f.queue.attempts(task.id, Page::default()).await.unwrap();
    assert_eq!((attempts.len(), total), (0, 0), "it never ran");
}

async fn a_retried_task_runs_again_and_its_attempts_tell_each_run(backend: Backend) {
    let f = fixture(backend).await;
    let (task, _) = f
        .queue
        .create(NewTask {
            max_attempts: 1,
            timeout_seconds: 1,
            ..titled("flaky")
        })
        .await
        .unwrap();
    let first_agent = Uuid::now_v7();
    let first = claim_one(&f.queue, first_agent).await;
    let failed = f
        .queue
        .fail(first.id, lease_of(&first), "boom".into(), true)
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed, "no attempts were left");
    let unknown = f.queue.retry(Uuid::now_v7()).await;
    assert!(matches!(unknown, Err(TaskError::NotFound(_))));

    let retried = f.queue.retry(task.id).await.unwrap();
    assert_eq!(
        (retried.status, retried.attempts, retried.error.as_deref()),
        (TaskStatus::Queued, 0, None)
    );
    let second = claim_one(&f.queue, Uuid::now_v7()).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(f.queue.sweep_expired_leases().await.unwrap(), 1);
    f.queue.retry(task.id).await.unwrap();
    let third = claim_one(&f.queue, first_agent).await;
    f.queue.cancel(task.id).await.unwrap();
    f.queue.retry(task.id).await.unwrap();
    let fourth = claim_one(&f.queue, first_agent).await;
    let done = f
        .queue
        .complete(fourth.id, lease_of(&fourth), r#"{"ok":true}"#.into())
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    let again = f.queue.retry(task.id).await;
    assert!(
        matches!(
            again,
            Err(TaskError::WrongStatus {
                status: TaskStatus::Completed,
                ..
            })
        ),
        "a completed task is not retried: {again:?}"
    );

    let (attempts, total) = f.queue.attempts(task.id, Page::default()).await.unwrap();
    assert_eq!(total, 4);
    let told: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt, a.agent_id, a.outcome, a.error.as_deref()))
        .collect();
    assert_eq!(
        told,
        [
            (1, first.agent_id, AttemptOutcome::Failed, Some("boom")),
            (
                2,
                second.agent_id,
                AttemptOutcome::LeaseExpired,
                Some("lease expired")
            ),
            (3, third.agent_id, AttemptOutcome::Cancelled, None),
            (4, fourth.agent_id, AttemptOutcome::Completed, None),
        ]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.finished_at.is_some_and(|end| end >= a.started_at))
    );
    let (page, _) = f
        .queue
        .attempts(task.id, Page::new(2, 3).unwrap())
        .await
        .unwrap();
    assert_eq!(page.iter().map(|a| a.attempt).collect::<Vec<_>>(), [4]);
    assert_totals_match_rows(&*f.store).await;
}

async fn a_batch_is_created_whole_or_not_at_all(backend: Backend) {
    let f = fixture(backend).await;
    let mut tasks: Vec<NewTask> = (0..1000).map(|i| titled(&format!("t{i}"))).collect();
    tasks[700].priority = 12;
    let refused = f.queue.create_many(tasks.clone()).await;
    assert!(
        matches!(&refused, Err(TaskError::Invalid(reason)) if reason.starts_with("tasks[700].priority")),
        "{refused:?}"
    );
    let everything = TaskFilter::default();
    assert_eq!(
        f.queue.list(&everything, Page::default()).await.unwrap().1,
        0
    );

    tasks[700].priority = 1;
    tasks[3].delay_seconds = Some(60);
    let created = f.queue.create_many(tasks).await.unwrap();
    let titles: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
    assert_eq!(
        created.iter().map(|t| t.title.clone()).collect::<Vec<_>>(),
        titles,
        "given back in the order asked"
    );
    assert_eq!(created[3].status, TaskStatus::Scheduled);
    assert_eq!(created[700].priority, 1);
    assert_eq!(
        f.queue.list(&everything, Page::default()).await.unwrap().1,
        1000
    );
    let first = claim_one(&f.queue, Uuid::now_v7()).await;
    assert_eq!(first.title, "t700", "the one with priority goes first");

    for size in [0, 1001] {
        let tasks = (0..size).map(|i| titled(&format!("x{i}"))).collect();
        assert!(matches!(
            f.queue.create_many(tasks).await,
            Err(TaskError::Invalid(_))
        ));
    }
    assert_totals_match_rows(&*f.store).await;
}

fn after(title: &str, parents: &[&Task]) -> NewTask {
    NewTask {
        depends_on: parents.iter().map(|parent| parent.id).collect(),
        ..titled(title)
    }
}

/// Claims the one ready task and completes it with `result`; returns it as claimed.
async fn run_one(queue: &TaskQueue, result: &str) -> Task {
    let task = claim_one(queue, Uuid::now_v7()).await;
    queue
        .complete(task.id, lease_of(&task), result.into())
        .await
        .unwrap();
    task
}

async fn a_diamond_runs_in_dependency_order_and_passes_results_down(backend: Backend) {
    let f = fixture(backend).await;
    let (plan, _) = f.queue.create(titled("plan")).await.unwrap();
    let (left, _) = f.queue.create(after("left", &[&plan])).await.unwrap();
    let (right, _) = f.queue.create(after("right", &[&plan])).await.unwrap();
    let (join, _) = f
        .queue
        .create(after("join", &[&left, &right]))
        .await
        .unwrap();
    assert_eq!(
        [plan.status, left.status, right.status, join.status],
        [
            TaskStatus::Queued,
            TaskStatus::Waiting,
            TaskStatus::Waiting,
            TaskStatus::Waiting
        ]
    );
    assert_eq!((left.dependency_count, join.dependency_count), (1, 2));

    assert_eq!(run_one(&f.queue, r#"{"steps":2}"#).await.id, plan.id);
    let agent = Uuid::now_v7();
    let mut middle = f.queue.claim(claim_for(agent, &[], 5)).await.unwrap();
    middle.sort_by_key(|task| task.title.clone());
    assert_eq!(
        middle.iter().map(|t| t.id).collect::<Vec<_>>(),
        [left.id, right.id],
        "both sides run once the plan is done, the join does not"
    );
    for side in &middle {
        assert_eq!(
            side.dependency_results,
            [(plan.id, Some(r#"{"steps":2}"#.to_owned()))]
        );
    }
    f.queue
        .complete(left.id, lease_of(&middle[0]), r#""l""#.into())
        .await
        .unwrap();
    assert_eq!(
        f.queue.get(join.id).await.unwrap().status,
        TaskStatus::Waiting
    );
    let waiting = tokio::spawn({
        let queue = f.queue.clone();
        async move {
            let claim = Claim {
                wait: Duration::from_secs(5),
                ..claim_for(Uuid::now_v7(), &[], 1)
            };
            queue.claim(claim).await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let completed_at = f.queue.now_millis();
    f.queue
        .complete(right.id, lease_of(&middle[1]), r#""r""#.into())
        .await
        .unwrap();
    let joined = waiting.await.unwrap();
    assert_eq!(joined.iter().map(|t| t.id).collect::<Vec<_>>(), [join.id]);
    assert!(
        f.queue.now_millis() - completed_at < 200,
        "a waiting claim gets the released task at once"
    );
    let mut results = joined[0].dependency_results.clone();
    results.sort();
    let mut expected = vec![
        (left.id, Some(r#""l""#.to_owned())),
        (right.id, Some(r#""r""#.to_owned())),
    ];
    expected.sort();
    assert_eq!(results, expected);
}

async fn a_failed_parent_cancels_its_descendants(backend: Backend) {
    let f = fixture(backend).await;
    let (root, _) = f
        .queue
        .create(NewTask {
            max_attempts: 1,
            ..titled("root")
        })
        .await
        .unwrap();
    let (child, _) = f.queue.create(after("child", &[&root])).await.unwrap();
    let (grandchild, _) = f
        .queue
        .create(after("grandchild", &[&child]))
        .await
        .unwrap();
    let keyed = || NewTask {
        idempotency_key: Some(IdempotencyKey {
            tenant: String::new(),
            key: "follow-up".into(),
        }),
        ..after("keyed", &[&root])
    };
    let (first_keyed, _) = f.queue.create(keyed()).await.unwrap();
    let (bystander, _) = f.queue.create(titled("bystander")).await.unwrap();
    let held = claim_one(&f.queue, Uuid::now_v7()).await;
    assert_eq!(held.id, root.id);
    f.queue
        .fail(root.id, lease_of(&held), "broke".into(), true)
        .await
        .unwrap();
    let reason = format!("dependency {} ended failed", root.id);
    for id in [child.id, grandchild.id] {
        let task = f.queue.get(id).await.unwrap();
        assert_eq!(
            (task.status, task.error.as_deref()),
            (TaskStatus::Cancelled, Some(reason.as_str()))
        );
        assert!(task.finished_at.is_some());
    }
    assert_eq!(
        f.queue.get(bystander.id).await.unwrap().status,
        TaskStatus::Queued
    );

    let (replayed, created) = f.queue.create(keyed()).await.unwrap();
    assert_eq!(
        (replayed.id, created, replayed.status),
        (first_keyed.id, false, TaskStatus::Cancelled),
        "a repeated submission answers what the first created, whatever became of its parent"
    );
    let blocked = f.queue.retry(child.id).await;
    assert!(
        matches!(blocked, Err(TaskError::RetryBlocked(id)) if id == child.id),
        "a task waiting on a failed one cannot be retried: {blocked:?}"
    );

    let too_late = f.queue.create(after("too late", &[&root])).await;
    assert!(
        matches!(too_late, Err(TaskError::DependencyEnded { id, status: TaskStatus::Failed }) if id == root.id),
        "{too_late:?}"
    );
    let unknown = f
        .queue
        .create(NewTask {
            depends_on: vec![Uuid::now_v7()],
            ..titled("orphan")
        })
        .await;
    assert!(matches!(unknown, Err(TaskError::Invalid(_))), "{unknown:?}");
    let foreign = f
        .queue
        .create(NewTask {
            tenant: Some("mallory".into()),
            user_id: Some("mallory".into()),
            ..after("foreign", &[&bystander])
        })
        .await;
    assert!(
        matches!(foreign, Err(TaskError::Invalid(_))),
        "another tenant's task is no dependency: {foreign:?}"
    );
    let everything = TaskFilter::default();
    assert_eq!(
        f.queue.list(&everything, Page::default()).await.unwrap().1,
        5,
        "refused tasks were not created"
    );
    assert_totals_match_rows(&*f.store).await;
}

async fn many_dependents_of_one_parent_may_be_created_at_once(backend: Backend) {
    let f = fixture(backend).await;
    let (parent, _) = f.queue.create(titled("parent")).await.unwrap();
    let creations: Vec<_> = (0..20)
        .map(|i| {
            let queue = f.queue.clone();
            let task = after(&format!("child {i}"), &[&parent]);
            tokio::spawn(async move { queue.create(task).await })
        })
        .collect();
    for creation in creations {
        let (child, _) = creation.await.unwrap().expect("no creation fails");
        assert_eq!(child.status, TaskStatus::Waiting);
    }
    let done = run_one(&f.queue, "null").await;
    assert_eq!(done.id, parent.id);
    let mut released = 0;
    while !f
        .queue
        .claim(claim_for(Uuid::now_v7(), &[], 100))
        .await
        .unwrap()
        .is_empty()
    {
        released += 1;
    }
    assert!(released >= 1);
    let queued = TaskFilter {
        status: Some(TaskStatus::Active),
        ..TaskFilter::default()
    };
    assert_eq!(
        f.queue.list(&queued, Page::default()).await.unwrap().1,
        20,
        "every child ran"
    );
}

async fn large_results_are_handed_down_within_a_budget(backend: Backend) {
    let f = fixture(backend).await;
    let mut parents = Vec::new();
    for i in 0..6 {
        let (parent, _) = f.queue.create(titled(&format!("big {i}"))).await.unwrap();
        parents.push(parent);
    }
    let (child, _) = f
        .queue
        .create(after("reader", &parents.iter().collect::<Vec<_>>()))
        .await
        .unwrap();
    let big = format!("\"{}\"", "x".repeat(900 * 1024));
    for _ in 0..6 {
        run_one(&f.queue, &big).await;
    }
    let claimed = claim_one(&f.queue, Uuid::now_v7()).await;
    assert_eq!(claimed.id, child.id);
    let handed: usize = claimed
        .dependency_results
        .iter()
        .map(|(_, result)| result.as_ref().map_or(0, String::len))
        .sum();
    assert_eq!(claimed.dependency_results.len(), 4, "as many as fit 4 MiB");
    assert!(handed <= 4 * 1024 * 1024);
}

async fn a_batch_waits_on_its_own_tasks(backend: Backend) {
    let f = fixture(backend).await;
    let created = f
        .queue
        .create_many(vec![
            titled("first"),
            NewTask {
                after: vec![0],
                ..titled("second")
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        created.iter().map(|t| t.status).collect::<Vec<_>>(),
        [TaskStatus::Queued, TaskStatus::Waiting]
    );
    run_one(&f.queue, "1").await;
    let second = claim_one(&f.queue, Uuid::now_v7()).await;
    assert_eq!(second.id, created[1].id);
    assert_eq!(
        second.dependency_results,
        [(created[0].id, Some("1".to_owned()))]
    );
    let backwards = f
        .queue
        .create_many(vec![NewTask {
            after: vec![0],
            ..titled("self")
        }])
        .await;
    assert!(
        matches!(backwards, Err(TaskError::Invalid(reason)) if reason.starts_with("tasks[0]."))
    );
}

fn step(key: &str, depends_on: &[&str]) -> WorkflowStep {
    WorkflowStep {
        key: key.into(),
        task: titled(key),
        depends_on: depends_on.iter().map(|key| (*key).to_owned()).collect(),
    }
}

fn pipeline(name: &str, user_id: Option<&str>) -> NewWorkflow {
    NewWorkflow {
        name: name.into(),
        user_id: user_id.map(str::to_owned),
        steps: vec![
            step("write", &["research-a", "research-b"]),
            step("research-a", &["plan"]),
            step("research-b", &["plan"]),
            step("plan", &[]),
        ],
    }
}

async fn workflows_run_as_one_graph_and_report_as_one(backend: Backend) {
    let f = fixture(backend).await;
    let cyclic = NewWorkflow {
        steps: vec![step("a", &["b"]), step("b", &["a"])],
        ..pipeline("loop", None)
    };
    assert!(matches!(
        f.queue.create_workflow(cyclic).await,
        Err(TaskError::Invalid(_))
    ));
    let everything = TaskFilter::default();
    assert_eq!(
        f.queue.list(&everything, Page::default()).await.unwrap().1,
        0
    );

    let WorkflowGraph {
        workflow,
        tasks,
        dependencies,
    } = f
        .queue
        .create_workflow(pipeline("report", Some("ada")))
        .await
        .unwrap();
    let edge = |key: &str, depends_on: &str| (key.to_owned(), depends_on.to_owned());
    assert_eq!(
        dependencies,
        [
            edge("research-a", "plan"),
            edge("research-b", "plan"),
            edge("write", "research-a"),
            edge("write", "research-b"),
        ]
    );
    assert_eq!(
        (
            workflow.status,
            workflow.user_id.as_deref(),
            workflow.finished_at
        ),
        (WorkflowStatus::Running, Some("ada"), None)
    );
    let by_key = |tasks: &[Task], key: &str| {
        tasks
            .iter()
            .find(|task| task.workflow_key.as_deref() == Some(key))
            .cloned()
            .unwrap()
    };
    assert_eq!(by_key(&tasks, "plan").status, TaskStatus::Queued);
    assert_eq!(by_key(&tasks, "write").status, TaskStatus::Waiting);
    assert!(tasks.iter().all(
        |task| task.workflow_id == Some(workflow.id) && task.user_id.as_deref() == Some("ada")
    ));
    for expected in ["plan", "research-a", "research-b", "write"] {
        let ran = run_one(&f.queue, &format!("\"{expected}\"")).await;
        if expected.starts_with("research") {
            // Both research steps are ready together; either may go first.
            assert!(ran.workflow_key.as_deref().unwrap().starts_with("research"));
        } else {
            assert_eq!(ran.workflow_key.as_deref(), Some(expected));
        }
    }
    let WorkflowGraph {
        workflow: done,
        tasks,
        ..
    } = f.queue.workflow(workflow.id).await.unwrap();
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert!(done.finished_at.is_some());
    assert!(
        tasks
            .iter()
            .all(|task| task.status == TaskStatus::Completed)
    );
    assert!(matches!(
        f.queue.cancel_workflow(workflow.id).await,
        Err(TaskError::WorkflowEnded {
            status: WorkflowStatus::Completed,
            ..
        })
    ));

    let WorkflowGraph {
        workflow: doomed, ..
    } = f
        .queue
        .create_workflow(pipeline("doomed", None))
        .await
        .unwrap();
    let WorkflowGraph {
        workflow: cancelled,
        tasks,
        ..
    } = f.queue.cancel_workflow(doomed.id).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    assert!(
        tasks
            .iter()
            .all(|task| task.status == TaskStatus::Cancelled)
    );

    let WorkflowGraph {
        workflow: failing,
        tasks,
        ..
    } = f
        .queue
        .create_workflow(pipeline("failing", None))
        .await
        .unwrap();
    let plan = claim_one(&f.queue, Uuid::now_v7()).await;
    assert_eq!(plan.id, by_key(&tasks, "plan").id);
    f.queue
        .fail(plan.id, lease_of(&plan), "no plan".into(), false)
        .await
        .unwrap();
    let WorkflowGraph {
        workflow: failed,
        tasks,
        ..
    } = f.queue.workflow(failing.id).await.unwrap();
    assert_eq!(failed.status, WorkflowStatus::Failed);
    assert_eq!(by_key(&tasks, "write").status, TaskStatus::Cancelled);

    // One branch failed while another still waits to run: cancelling stops the rest.
    let branches = NewWorkflow {
        steps: vec![step("left", &[]), step("right", &[])],
        ..pipeline("branches", None)
    };
    let WorkflowGraph {
        workflow: branching,
        ..
    } = f.queue.create_workflow(branches).await.unwrap();
    let left = claim_one(&f.queue, Uuid::now_v7()).await;
    f.queue
        .fail(left.id, lease_of(&left), "broke".into(), false)
        .await
        .unwrap();
    let WorkflowGraph {
        workflow: cancelled,
        tasks,
        ..
    } = f.queue.cancel_workflow(branching.id).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Failed);
    assert!(tasks.iter().all(|task| task.status.is_final()));
    assert!(matches!(
        f.queue.cancel_workflow(branching.id).await,
        Err(TaskError::WorkflowEnded { .. })
    ));

    let only = |status, user_id: Option<&str>| WorkflowFilter {
        status,
        user_id: user_id.map(str::to_owned),
    };
    let (all, total) = f
        .queue
        .list_workflows(&only(None, None), Page::default())
        .await
        .unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        all.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["branches", "failing", "doomed", "report"],
        "newest first"
    );
    let (failed_ones, _) = f
        .queue
        .list_workflows(&only(Some(WorkflowStatus::Failed), None), Page::default())
        .await
        .unwrap();
    assert_eq!(
        failed_ones.iter().map(|w| w.id).collect::<Vec<_>>(),
        [branching.id, failing.id]
    );
    let (adas, total) = f
        .queue
        .list_workflows(&only(None, Some("ada")), Page::default())
        .await
        .unwrap();
    assert_eq!((adas.len(), total), (1, 1));
    assert!(matches!(
        f.queue.workflow(Uuid::now_v7()).await,
        Err(TaskError::WorkflowNotFound(_))
    ));
    assert_totals_match_rows(&*f.store).await;
}

fn every_second(name: &str) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron: "* * * * * *".into(),
        timezone: String::new(),
        task: NewTask {
            user_id: Some("ops".into()),
            ..titled("tick")
        },
        paused: false,
    }
}

/// A scheduler over the fixture's database, as another tasks replica would run it.
async fn scheduler_replica(f: &Fixture) -> Arc<Scheduler> {
    let store = storage::open(f.database.pool())
        .await
        .expect("migrations apply");
    let queue = replica(&f.database, store.clone(), Clock::new()).await;
    Scheduler::new(queue, store)
}

async fn scheduled_tasks(f: &Fixture, schedule: Uuid) -> Vec<Task> {
    let everything = TaskFilter::default();
    let (tasks, _) = f
        .queue
        .list(&everything, Page::new(1, 100).unwrap())
        .await
        .unwrap();
    tasks
        .into_iter()
        .filter(|task| task.schedule_id == Some(schedule))
        .collect()
}

/// Runs every scheduler replica until `stop` is cancelled.
fn run_all(
    replicas: &[Arc<Scheduler>],
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    replicas
        .iter()
        .map(|replica| tokio::spawn(replica.clone().run(stop.clone())))
        .collect()
}

/// Stops the replicas and waits until none is still firing.
async fn stop_all(stop: &CancellationToken, runs: Vec<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    for run in runs {
        run.await.expect("a scheduler replica runs to its end");
    }
}

async fn a_schedule_fires_each_tick_once_on_any_number_of_replicas(backend: Backend) {
    // The issue's figure is 30 s on PostgreSQL; SQLite has one writer, so a shorter run shows it.
    let seconds: i64 = if backend == Backend::Postgres { 30 } else { 6 };
    let f = fixture(backend).await;
    let replicas = [
        scheduler_replica(&f).await,
        scheduler_replica(&f).await,
        scheduler_replica(&f).await,
    ];
    let schedule = replicas[0].create(every_second("heartbeat")).await.unwrap();
    let stop = CancellationToken::new();
    let started = f.queue.now_millis();
    let runs = run_all(&replicas, &stop);
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(seconds * 1000).unwrap(),
    ))
    .await;
    stop_all(&stop, runs).await;
    let stopped = f.queue.now_millis();
    let tasks = scheduled_tasks(&f, schedule.id).await;
    let ticks = (stopped / 1000) - (started / 1000);
    assert!(
        (ticks - 1..=ticks + 1).contains(&i64::try_from(tasks.len()).unwrap()),
        "{} tasks for {ticks} ticks",
        tasks.len()
    );
    assert!(
        tasks
            .iter()
            .all(|task| task.user_id.as_deref() == Some("ops") && task.title == "tick")
    );
    let read = replicas[1].get(schedule.id).await.unwrap();
    assert!(read.last_run_at.is_some_and(|last| last >= stopped - 2_000));

    // Every replica is down for a while (10 s on PostgreSQL), then all come back: the ticks
    // missed meanwhile create one task, not one each.
    let downtime: u64 = if backend == Backend::Postgres { 10 } else { 3 };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pending = replicas[2].get(schedule.id).await.unwrap().next_run_at;
    tokio::time::sleep(Duration::from_secs(downtime)).await;
    let restarted = f.queue.now_millis();
    let stop = CancellationToken::new();
    let runs = run_all(&replicas, &stop);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop_all(&stop, runs).await;
    // Each replica syncs its own offset to the database's clock, which can stand some
    // milliseconds off the fixture's on a loaded machine: a replica behind it fires the first
    // regular tick after `restarted` as one before it. Half a tick of margin tells the two apart.
    let missed = scheduled_tasks(&f, schedule.id)
        .await
        .iter()
        .filter(|task| {
            task.schedule_tick
                .is_some_and(|tick| tick >= pending && tick < restarted - 500)
        })
        .count();
    assert_eq!(
        missed, 1,
        "the ticks missed while no replica ran create one task"
    );
    assert_totals_match_rows(&*f.store).await;
}

async fn missed_ticks_fire_once_and_paused_schedules_not_at_all(backend: Backend) {
    let f = fixture(backend).await;
    // The scheduler runs over the fixture's own queue, so the times read here come from the
    // clock it stamps with (another replica's may stand a few milliseconds off).
    let scheduler = Scheduler::new(f.queue.clone(), f.store.clone());
    for (cron, timezone) in [("* * *", "UTC"), ("* * * * *", "Atlantis/Capital")] {
        let bad = NewSchedule {
            cron: cron.into(),
            timezone: timezone.into(),
            ..every_second("bad")
        };
        assert!(matches!(
            scheduler.create(bad).await,
            Err(TaskError::Invalid(_))
        ));
    }
    let schedule = scheduler.create(every_second("nightly")).await.unwrap();
    assert!(matches!(
        scheduler.create(every_second("nightly")).await,
        Err(TaskError::ScheduleNameTaken(_))
    ));
    let another_tenants = NewSchedule {
        task: NewTask {
            user_id: Some("elsewhere".into()),
            ..titled("tick")
        },
        paused: true,
        ..every_second("nightly")
    };
    assert!(
        scheduler.create(another_tenants).await.is_ok(),
        "names are unique per tenant"
    );
    assert!(schedule.next_run_at > schedule.created_at);

    // No replica runs for three seconds and more: the missed ticks fire once.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let caught_up_at = f.queue.now_millis();
    assert_eq!(scheduler.fire_due().await.unwrap(), 1);
    assert_eq!(scheduled_tasks(&f, schedule.id).await.len(), 1);
    let moved = scheduler.get(schedule.id).await.unwrap();
    assert!(
        (caught_up_at..=caught_up_at + 1_100).contains(&moved.next_run_at),
        "it goes on from now"
    );
    assert_eq!(moved.last_run_at, Some(schedule.next_run_at));

    let pause = ScheduleUpdate {
        paused: Some(true),
        ..ScheduleUpdate::default()
    };
    scheduler.update(schedule.id, pause).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        scheduler.fire_due().await.unwrap(),
        0,
        "a paused schedule fires nothing"
    );
    let resume = ScheduleUpdate {
        paused: Some(false),
        ..ScheduleUpdate::default()
    };
    // Read before resuming: a tick computed at resume time may fall within the same
    // millisecond as a clock read after it.
    let resumed_at = f.queue.now_millis();
    let resumed = scheduler.update(schedule.id, resume).await.unwrap();
    assert!(
        resumed.next_run_at >= resumed_at,
        "ticks missed while paused are skipped"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(scheduler.fire_due().await.unwrap(), 1);
    assert_eq!(scheduled_tasks(&f, schedule.id).await.len(), 2);

    scheduler.delete(schedule.id).await.unwrap();
    assert!(matches!(
        scheduler.get(schedule.id).await,
        Err(TaskError::ScheduleNotFound(_))
    ));
    assert_eq!(
        scheduled_tasks(&f, schedule.id).await.len(),
        2,
        "its tasks stay"
    );
}

swarm_kit::conformance!(
    claims_made_together_share_statements_and_respect_concurrency,
    kept_counts_stay_exact_while_folds_race_writers,
    large_results_are_handed_down_within_a_budget,
    many_dependents_of_one_parent_may_be_created_at_once,
    a_schedule_fires_each_tick_once_on_any_number_of_replicas,
    missed_ticks_fire_once_and_paused_schedules_not_at_all,
    workflows_run_as_one_graph_and_report_as_one,
    a_diamond_runs_in_dependency_order_and_passes_results_down,
    a_failed_parent_cancels_its_descendants,
    a_batch_waits_on_its_own_tasks,
    a_batch_is_created_whole_or_not_at_all,
    delayed_tasks_are_claimable_on_time_and_not_before,
    a_waiting_claim_gets_a_delayed_task_on_time,
    scheduled_tasks_can_be_cancelled,
    a_retried_task_runs_again_and_its_attempts_tell_each_run,
    concurrent_creates_share_transactions_and_each_gets_its_own_task,
    concurrent_completions_share_transactions_and_each_gets_its_own_answer,
    created_task_keeps_every_field,
    invalid_task_changes_nothing,
    idempotency_keys_are_per_tenant_and_bound_to_their_request,
    lists_filter_and_paginate_newest_first,
    claims_take_highest_priority_then_oldest,
    claims_route_by_capability_and_pin,
    claims_take_the_best_across_capability_sets_and_pins,
    claims_never_exceed_the_agents_concurrency,
    tasks_of_a_lost_agent_return_to_the_queue,
    the_liveness_sweep_handles_thousands_of_busy_agents,
    each_claim_is_a_new_attempt_with_a_fresh_lease,
    only_the_lease_holder_may_report,
    progress_renews_the_lease,
    completion_is_accepted_once,
    a_repeated_report_gets_the_same_answer,
    heartbeats_renew_listed_tasks_and_take_back_unlisted_ones,
    failures_retry_with_backoff_until_attempts_run_out,
    permanent_failures_do_not_retry,
    expired_leases_return_to_the_queue,
    an_attempt_ends_at_its_execution_bound_however_often_renewed,
    cancellation_stops_queued_and_active_tasks,
    messages_form_a_conversation,
    racing_claimers_never_share_an_attempt,
    long_polling_claims_wake_when_work_arrives,
    watchers_see_every_change_until_the_end,
    watchers_see_changes_another_replica_makes,
    watchers_are_capped_and_slow_ones_dropped,
    one_new_task_wakes_one_waiting_claim,
    work_that_becomes_ready_later_wakes_a_waiting_claim,
    replicas_with_skewed_clocks_agree_on_leases,
    finished_tasks_are_pruned_after_retention,
    large_prunes_run_in_batches_to_the_end,
);
