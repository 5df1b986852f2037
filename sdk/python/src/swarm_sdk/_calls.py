"""Every call of the API, described once: its method, path, body and how its answer reads.

`Client` and `AsyncClient` only send these; neither knows a route of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from .models import Agent, Attempt, Message, Page, Record, Schedule, Task, Workflow

T = TypeVar("T")
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    """Seconds the answer may take, when not the client's default (a long poll)."""
    answers: frozenset[int] = frozenset()
    """Statuses besides 2xx whose body is the answer rather than an error (health's 503)."""


def _page(kind: Callable[[dict[str, Any]], R]) -> Callable[[Any], Page[R]]:
    def read(answer: Any) -> Page[R]:
        return Page(
            items=[kind(item) for item in answer["items"]],
            page=answer["page"],
            per_page=answer["per_page"],
            total=answer["total"],
            pages=answer["pages"],
        )

    return read


def _nothing(_: Any) -> None:
    return None


def _id(value: str) -> str:
    return quote(value, safe="")


def _filters(filters: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in filters.items() if value is not None}


def create_task(title: str, fields: dict[str, Any]) -> Call[Task]:
    """`POST /api/tasks`."""
    return Call("POST", "/api/tasks", Task, json={"title": title, **fields})


def create_tasks(tasks: list[dict[str, Any]]) -> Call[list[Task]]:
    """`POST /api/tasks/batch`."""
    return Call(
        "POST",
        "/api/tasks/batch",
        lambda answer: [Task(task) for task in answer["items"]],
        json={"tasks": tasks},
    )


def get_task(task_id: str) -> Call[Task]:
    """`GET /api/tasks/{id}`."""
    return Call("GET", f"/api/tasks/{_id(task_id)}", Task)


def list_tasks(filters: dict[str, Any]) -> Call[Page[Task]]:
    """`GET /api/tasks`."""
    return Call("GET", "/api/tasks", _page(Task), params=_filters(filters))


def cancel_task(task_id: str) -> Call[Task]:
    """`POST /api/tasks/{id}/cancel`."""
    return Call("POST", f"/api/tasks/{_id(task_id)}/cancel", Task)


def retry_task(task_id: str) -> Call[Task]:
    """`POST /api/tasks/{id}/retry`."""
    return Call("POST", f"/api/tasks/{_id(task_id)}/retry", Task)


def list_attempts(task_id: str, filters: dict[str, Any]) -> Call[Page[Attempt]]:
    """`GET /api/tasks/{id}/attempts`."""
    path = f"/api/tasks/{_id(task_id)}/attempts"
    return Call("GET", path, _page(Attempt), params=_filters(filters))


def post_message(task_id: str, fields: dict[str, Any]) -> Call[Message]:
    """`POST /api/tasks/{id}/messages`."""
    return Call("POST", f"/api/tasks/{_id(task_id)}/messages", Message, json=fields)


def list_messages(task_id: str, filters: dict[str, Any]) -> Call[Page[Message]]:
    """`GET /api/tasks/{id}/messages`."""
    path = f"/api/tasks/{_id(task_id)}/messages"
    return Call("GET", path, _page(Message), params=_filters(filters))


def list_agents(filters: dict[str, Any]) -> Call[Page[Agent]]:
    """`GET /api/agents`."""
    return Call("GET", "/api/agents", _page(Agent), params=_filters(filters))


def get_agent(agent_id: str) -> Call[Agent]:
    """`GET /api/agents/{id}`."""
    return Call("GET", f"/api/agents/{_id(agent_id)}", Agent)


def create_workflow(name: str, tasks: list[dict[str, Any]]) -> Call[Workflow]:
    """`POST /api/workflows`."""
    return Call("POST", "/api/workflows", Workflow, json={"name": name, "tasks": tasks})


def get_workflow(workflow_id: str) -> Call[Workflow]:
    """`GET /api/workflows/{id}`."""
    return Call("GET", f"/api/workflows/{_id(workflow_id)}", Workflow)


def list_workflows(filters: dict[str, Any]) -> Call[Page[Workflow]]:
    """`GET /api/workflows`."""
    return Call("GET", "/api/workflows", _page(Workflow), params=_filters(filters))


def cancel_workflow(workflow_id: str) -> Call[Workflow]:
    """`POST /api/workflows/{id}/cancel`."""
    return Call("POST", f"/api/workflows/{_id(workflow_id)}/cancel", Workflow)


def create_schedule(
    name: str, cron: str, task: dict[str, Any], fields: dict[str, Any]
) -> Call[Schedule]:
    """`POST /api/schedules`."""
    body = {"name": name, "cron": cron, "task": task, **fields}
    return Call("POST", "/api/schedules", Schedule, json=body)


def get_schedule(schedule_id: str) -> Call[Schedule]:
    """`GET /api/schedules/{id}`."""
    return Call("GET", f"/api/schedules/{_id(schedule_id)}", Schedule)


def list_schedules(filters: dict[str, Any]) -> Call[Page[Schedule]]:
    """`GET /api/schedules`."""
    return Call("GET", "/api/schedules", _page(Schedule), params=_filters(filters))


def update_schedule(schedule_id: str, fields: dict[str, Any]) -> Call[Schedule]:
    """`PATCH /api/schedules/{id}`."""
    return Call("PATCH", f"/api/schedules/{_id(schedule_id)}", Schedule, json=fields)


def pause_schedule(schedule_id: str, paused: bool) -> Call[Schedule]:
    """`POST /api/schedules/{id}/pause` or `/resume`."""
    action = "pause" if paused else "resume"
    return Call("POST", f"/api/schedules/{_id(schedule_id)}/{action}", Schedule)


def delete_schedule(schedule_id: str) -> Call[None]:
    """`DELETE /api/schedules/{id}`."""
    return Call("DELETE", f"/api/schedules/{_id(schedule_id)}", _nothing)


def health() -> Call[dict[str, Any]]:
    """`GET /api/health`: its report whether healthy (200) or not (503)."""
    return Call("GET", "/api/health", dict, answers=frozenset({503}))


def join_agent(fields: dict[str, Any]) -> Call[Agent]:
    """`POST /api/agents/join`."""
    return Call("POST", "/api/agents/join", Agent, json=fields)


def heartbeat(
    agent_id: str, active_tasks: list[str], timeout: float | None = None
) -> Call[dict[str, Any]]:
    """`POST /api/agents/{id}/heartbeat`, listing the tasks the agent works on."""
    path = f"/api/agents/{_id(agent_id)}/heartbeat"
    return Call("POST", path, dict, json={"active_tasks": active_tasks}, timeout=timeout)


def claim_tasks(agent_id: str, max_tasks: int, wait_seconds: int) -> Call[list[Task]]:
    """`POST /api/tasks/claim`, long-polling `wait_seconds`."""
    body = {"agent_id": agent_id, "max_tasks": max_tasks, "wait_seconds": wait_seconds}
    return Call(
        "POST",
        "/api/tasks/claim",
        lambda answer: [Task(task) for task in answer["tasks"]],
        json=body,
        timeout=wait_seconds + _CLAIM_ANSWER_SLACK,
    )


def report_progress(task: Task, percent: int, message: str | None) -> Call[Task]:
    """`POST /api/tasks/{id}/progress` for the attempt `task` is."""
    body = {**_lease(task), "percent": percent, "message": message}
    return Call("POST", f"/api/tasks/{_id(task.id)}/progress", Task, json=body)


def complete_task(task: Task, result: Any) -> Call[Task]:
    """`POST /api/tasks/{id}/complete` for the attempt `task` is."""
    body = {**_lease(task), "result": result}
    return Call("POST", f"/api/tasks/{_id(task.id)}/complete", Task, json=body)


def fail_task(task: Task, error: str, retryable: bool) -> Call[Task]:
    """`POST /api/tasks/{id}/fail` for the attempt `task` is."""
    body = {**_lease(task), "error": error, "retryable": retryable}
    return Call("POST", f"/api/tasks/{_id(task.id)}/fail", Task, json=body)


def finish_task(
    task: Task, ending: dict[str, Any], claim_next: int
) -> Call[tuple[Task, list[Task]]]:
    """`POST /api/tasks/{id}/finish` for the attempt `task` is, claiming `claim_next` more.

    `ending` is `{"complete": ...}` or `{"fail": ...}`; the answer is the finished task and the
    tasks claimed next.
    """
    body = {**_lease(task), **ending, "claim_next": claim_next}
    return Call(
        "POST",
        f"/api/tasks/{_id(task.id)}/finish",
        lambda answer: (Task(answer["task"]), [Task(claimed) for claimed in answer["claimed"]]),
        json=body,
    )


_CLAIM_ANSWER_SLACK = 10.0


def _lease(task: Task) -> dict[str, Any]:
    return {"agent_id": task.agent_id, "lease_id": task.lease_id}
