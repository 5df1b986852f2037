"""`Client` and `AsyncClient`: the REST API of a Swarm gateway, over httpx.

Both send the calls of `_calls`, which describe every route once; they differ only in how
they wait. Every call that answers with a task returns a `Task`; lists return a `Page`; a
refusal raises `SwarmError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, TypeVar

import httpx

from . import _calls as calls
from ._calls import Call
from .errors import SwarmError
from .models import Agent, Attempt, Message, Page, Schedule, Task, Workflow

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
_FIRST_POLL = 0.05
_LONGEST_POLL = 1.0


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _read(call: Call[T], response: httpx.Response) -> T:
    if response.is_success:
        try:
            return call.read(response.json() if response.content else None)
        except (ValueError, KeyError, TypeError) as unreadable:
            # Not the API's answer: a wrong base URL, or a proxy that answered instead.
            raise SwarmError(
                response.status_code, "invalid_response", f"the answer is not Swarm's: {unreadable}"
            ) from unreadable
    if response.status_code in call.answers:
        # The route's own answer, unless something on the way (a proxy) answered instead.
        with contextlib.suppress(ValueError):
            answer = response.json()
            if isinstance(answer, dict) and "error" not in answer:
                return call.read(answer)
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "unknown", response.text
    raise SwarmError(response.status_code, code, message)


def _unreachable(error: httpx.TransportError) -> SwarmError:
    return SwarmError(0, "unavailable", f"cannot reach the gateway: {error}")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _pause(wait: float, deadline: float | None, task_id: str) -> float:
    """Returns how long to wait before looking at the task again.

    That is `wait`, or the time left when shorter, so that the last look is at the deadline.
    Raises `TimeoutError` once a look at or past the deadline found the task unfinished.
    """
    if deadline is None:
        return wait
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"task {task_id} did not finish in time")
    return min(wait, left)


class Client:
    """A client of the gateway at `base_url`, authenticated by `api_key`."""

    def __init__(
        self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 30.0
    ) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)
        self._timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                timeout=call.timeout or self._timeout,
            )
        except httpx.TransportError as error:
            raise _unreachable(error) from error
        return _read(call, response)

    def create_task(self, title: str, **fields: Any) -> Task:
        """Submits a task (any field of `POST /api/tasks` as a keyword)."""
        return self._send(calls.create_task(title, fields))

    def create_tasks(self, tasks: list[dict[str, Any]]) -> list[Task]:
        """Submits up to 1,000 tasks in one transaction, all or none."""
        return self._send(calls.create_tasks(tasks))

    def get_task(self, task_id: str) -> Task:
        """Returns a task."""
        return self._send(calls.get_task(task_id))

    def list_tasks(self, **filters: Any) -> Page[Task]:
        """Lists tasks, newest first (`status`, `kind`, `agent_id`, `page`, `per_page`, ...)."""
        return self._send(calls.list_tasks(filters))

    def cancel_task(self, task_id: str) -> Task:
        """Cancels a task that has not finished."""
        return self._send(calls.cancel_task(task_id))

    def retry_task(self, task_id: str) -> Task:
        """Queues a failed or cancelled task again."""
        return self._send(calls.retry_task(task_id))

    def list_attempts(self, task_id: str, **filters: Any) -> Page[Attempt]:
        """Lists a task's attempts, oldest first."""
        return self._send(calls.list_attempts(task_id, filters))

    def post_message(self, task_id: str, sender: str, content: str, **fields: Any) -> Message:
        """Adds a message to a task's conversation."""
        body = {"sender": sender, "content": content, **fields}
        return self._send(calls.post_message(task_id, body))

    def list_messages(self, task_id: str, **filters: Any) -> Page[Message]:
        """Lists a task's messages, oldest first."""
        return self._send(calls.list_messages(task_id, filters))

    def list_agents(self, **filters: Any) -> Page[Agent]:
        """Lists agents (`status`, `capability`, `page`, `per_page`)."""
        return self._send(calls.list_agents(filters))

    def get_agent(self, agent_id: str) -> Agent:
        """Returns an agent."""
        return self._send(calls.get_agent(agent_id))

    def create_workflow(self, name: str, tasks: list[dict[str, Any]]) -> Workflow:
        """Submits a workflow: tasks with a `key`, whose `depends_on` names keys."""
        return self._send(calls.create_workflow(name, tasks))

    def get_workflow(self, workflow_id: str) -> Workflow:
        """Returns a workflow with its tasks."""
        return self._send(calls.get_workflow(workflow_id))

    def list_workflows(self, **filters: Any) -> Page[Workflow]:
        """Lists workflows, newest first."""
        return self._send(calls.list_workflows(filters))

    def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancels every unfinished task of a workflow."""
        return self._send(calls.cancel_workflow(workflow_id))

    def create_schedule(
        self, name: str, cron: str, task: dict[str, Any], **fields: Any
    ) -> Schedule:
        """Creates a cron schedule (`timezone`, `paused` as keywords)."""
        return self._send(calls.create_schedule(name, cron, task, fields))

    def get_schedule(self, schedule_id: str) -> Schedule:
        """Returns a schedule."""
        return self._send(calls.get_schedule(schedule_id))

    def list_schedules(self, **filters: Any) -> Page[Schedule]:
        """Lists schedules, newest first."""
        return self._send(calls.list_schedules(filters))

    def update_schedule(self, schedule_id: str, **fields: Any) -> Schedule:
        """Changes any of a schedule's fields."""
        return self._send(calls.update_schedule(schedule_id, fields))

    def pause_schedule(self, schedule_id: str) -> Schedule:
        """Pauses a schedule."""
        return self._send(calls.pause_schedule(schedule_id, paused=True))

    def resume_schedule(self, schedule_id: str) -> Schedule:
        """Resumes a schedule from its next tick."""
        return self._send(calls.pause_schedule(schedule_id, paused=False))

    def delete_schedule(self, schedule_id: str) -> None:
        """Deletes a schedule; its tasks stay."""
        self._send(calls.delete_schedule(schedule_id))

    def health(self) -> dict[str, Any]:
        """Returns the health of every service (`status` is `unhealthy` when one is down)."""
        return self._send(calls.health())

    def wait_for(self, task_id: str, timeout: float | None = None) -> Task:
        """Returns the task once it finished; raises `TimeoutError` after `timeout` seconds."""
        deadline, wait = _deadline(timeout), _FIRST_POLL
        while not (task := self.get_task(task_id)).finished:
            time.sleep(_pause(wait, deadline, task_id))
            wait = min(wait * 2, _LONGEST_POLL)
        return task


class AsyncClient:
    """The `Client` for asyncio: the same calls, awaited.

    With `http2`, every call shares one multiplexed HTTP/2 connection (on `http://`, HTTP/2
    with prior knowledge, which the gateway speaks; a proxy in between must too), which costs
    far less per call than a pool of HTTP/1.1 connections when many calls are in flight.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 30.0,
        http2: bool = False,
    ) -> None:
        cleartext = base_url.startswith("http://")
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(api_key),
            timeout=timeout,
            http2=http2,
            http1=not (http2 and cleartext),
        )
        self._timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                timeout=call.timeout or self._timeout,
            )
        except httpx.TransportError as error:
            raise _unreachable(error) from error
        return _read(call, response)

    async def create_task(self, title: str, **fields: Any) -> Task:
        """Submits a task (any field of `POST /api/tasks` as a keyword)."""
        return await self._send(calls.create_task(title, fields))

    async def create_tasks(self, tasks: list[dict[str, Any]]) -> list[Task]:
        """Submits up to 1,000 tasks in one transaction, all or none."""
        return await self._send(calls.create_tasks(tasks))

    async def get_task(self, task_id: str) -> Task:
        """Returns a task."""
        return await self._send(calls.get_task(task_id))

    async def list_tasks(self, **filters: Any) -> Page[Task]:
        """Lists tasks, newest first."""
        return await self._send(calls.list_tasks(filters))

    async def cancel_task(self, task_id: str) -> Task:
        """Cancels a task that has not finished."""
        return await self._send(calls.cancel_task(task_id))

    async def retry_task(self, task_id: str) -> Task:
        """Queues a failed or cancelled task again."""
        return await self._send(calls.retry_task(task_id))

    async def list_attempts(self, task_id: str, **filters: Any) -> Page[Attempt]:
        """Lists a task's attempts, oldest first."""
        return await self._send(calls.list_attempts(task_id, filters))

    async def post_message(self, task_id: str, sender: str, content: str, **fields: Any) -> Message:
        """Adds a message to a task's conversation."""
        body = {"sender": sender, "content": content, **fields}
        return await self._send(calls.post_message(task_id, body))

    async def list_messages(self, task_id: str, **filters: Any) -> Page[Message]:
        """Lists a task's messages, oldest first."""
        return await self._send(calls.list_messages(task_id, filters))

    async def list_agents(self, **filters: Any) -> Page[Agent]:
        """Lists agents."""
        return await self._send(calls.list_agents(filters))

    async def get_agent(self, agent_id: str) -> Agent:
        """Returns an agent."""
        return await self._send(calls.get_agent(agent_id))

    async def create_workflow(self, name: str, tasks: list[dict[str, Any]]) -> Workflow:
        """Submits a workflow: tasks with a `key`, whose `depends_on` names keys."""
        return await self._send(calls.create_workflow(name, tasks))

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """Returns a workflow with its tasks."""
        return await self._send(calls.get_workflow(workflow_id))

    async def list_workflows(self, **filters: Any) -> Page[Workflow]:
        """Lists workflows, newest first."""
        return await self._send(calls.list_workflows(filters))

    async def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancels every unfinished task of a workflow."""
        return await self._send(calls.cancel_workflow(workflow_id))

    async def create_schedule(
        self, name: str, cron: str, task: dict[str, Any], **fields: Any
    ) -> Schedule:
        """Creates a cron schedule."""
        return await self._send(calls.create_schedule(name, cron, task, fields))

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """Returns a schedule."""
        return await self._send(calls.get_schedule(schedule_id))

    async def list_schedules(self, **filters: Any) -> Page[Schedule]:
        """Lists schedules, newest first."""
        return await self._send(calls.list_schedules(filters))

    async def update_schedule(self, schedule_id: str, **fields: Any) -> Schedule:
        """Changes any of a schedule's fields."""
        return await self._send(calls.update_schedule(schedule_id, fields))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        """Pauses a schedule."""
        return await self._send(calls.pause_schedule(schedule_id, paused=True))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Resumes a schedule from its next tick."""
        return await self._send(calls.pause_schedule(schedule_id, paused=False))

    async def delete_schedule(self, schedule_id: str) -> None:
        """Deletes a schedule; its tasks stay."""
        await self._send(calls.delete_schedule(schedule_id))

    async def health(self) -> dict[str, Any]:
        """Returns the health of every service (`status` is `unhealthy` when one is down)."""
        return await self._send(calls.health())

    # The agent's side of the API, which `Worker` uses.

    async def join_agent(self, name: str, **fields: Any) -> Agent:
        """Registers the agent `name`, or resumes it (an agent key resumes its own agent)."""
        return await self._send(calls.join_agent({"name": name, **fields}))

    async def heartbeat(
        self, agent_id: str, active_tasks: list[str], timeout: float | None = None
    ) -> dict[str, Any]:
        """Records a heartbeat listing the held tasks; the answer's `cancel` names those to stop.

        `timeout` (seconds) replaces the client's timeout for this call (httpx applies it to
        each of connecting, sending and reading).
        """
        return await self._send(calls.heartbeat(agent_id, active_tasks, timeout))

    async def claim_tasks(
        self, agent_id: str, max_tasks: int = 1, wait_seconds: int = 0
    ) -> list[Task]:
        """Claims up to `max_tasks` tasks, waiting up to `wait_seconds` (at most 60) for work."""
        return await self._send(calls.claim_tasks(agent_id, max_tasks, wait_seconds))

    async def report_progress(self, task: Task, percent: int, message: str | None = None) -> Task:
        """Reports progress on a claimed task, which renews its lease."""
        return await self._send(calls.report_progress(task, percent, message))

    async def complete_task(self, task: Task, result: Any = None) -> Task:
        """Completes a claimed task; repeating it for the same attempt answers the same."""
        return await self._send(calls.complete_task(task, result))

    async def fail_task(self, task: Task, error: str, retryable: bool = True) -> Task:
        """Fails a claimed task: queued again while retryable and attempts remain."""
        return await self._send(calls.fail_task(task, error, retryable))

    async def finish_task(
        self,
        task: Task,
        result: Any = None,
        *,
        error: str | None = None,
        retryable: bool = True,
        claim_next: int = 0,
    ) -> tuple[Task, list[Task]]:
        """Completes a claimed task (or, given `error`, fails it) and claims the agent's next.

        Up to `claim_next` more tasks are claimed for the task's agent in the same call, without
        waiting. Returns the finished task and the tasks claimed; repeating it for the same
        attempt finishes nothing twice.
        """
        ending: dict[str, Any] = (
            {"complete": {"result": result}}
            if error is None
            else {"fail": {"error": error, "retryable": retryable}}
        )
        return await self._send(calls.finish_task(task, ending, claim_next))

    async def wait_for(self, task_id: str, timeout: float | None = None) -> Task:
        """Returns the task once it finished; raises `TimeoutError` after `timeout` seconds."""
        deadline, wait = _deadline(timeout), _FIRST_POLL
        while not (task := await self.get_task(task_id)).finished:
            await asyncio.sleep(_pause(wait, deadline, task_id))
            wait = min(wait * 2, _LONGEST_POLL)
        return task
