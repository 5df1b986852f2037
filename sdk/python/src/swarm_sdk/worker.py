"""`Worker`: an agent process that claims tasks and runs a handler on each.

A worker joins as an agent (an agent key resumes the key's own agent; an admin key registers
or resumes the agent it names), then runs three things at once on one event loop:

- the claim loop, which long-polls for as many tasks as it has free slots (`concurrency`), on a
  connection of its own that it closes when the worker stops, so the gateway drops a claim still
  waiting then;
- one job per claimed task: the handler (a coroutine function, or a plain function run in a
  thread), and the task's reports (progress, messages, then the outcome) sent in order, each
  retried with jittered backoff while the gateway is unreachable or busy; the outcome is retried
  until it is acknowledged, which completion's idempotency makes safe;
- heartbeats listing the held tasks, which renew their leases and name the tasks the worker no
  longer holds (cancelled, timed out, taken back): their handlers' `ctx.cancelled` turns true.
  While it holds tasks the worker beats at least every second, so a cancellation reaches the
  handler within about a second, and well within every lease.

`run()` blocks until SIGINT or SIGTERM, then stops claiming, gives running handlers
`grace_period` seconds to finish and report, and fails the rest as retryable: the attempt
counts, and the queue runs the task again after its retry backoff. A claim refused for good
(a revoked key, a deleted agent) stops the worker too, and `run()` raises it once the running
handlers are done, so a supervisor sees the process fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import signal
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_random_exponential,
)
from tenacity.stop import StopBaseT

from .client import DEFAULT_URL, AsyncClient
from .errors import SwarmError
from .models import Agent, Task

log = logging.getLogger("swarm_sdk.worker")

Handler = Callable[[Task, "Context"], Any]
"""A task's handler: returns the result, or an awaitable of it."""

_CLAIM_WAIT_SECONDS = 20
_MAX_CLAIM = 100
_BUSY_BEAT_SECONDS = 1.0
_MIN_BEAT_DEADLINE_SECONDS = 5.0
"""The shortest wait for a heartbeat's answer: long enough for a busy gateway, short enough to
act well within the agent's TTL (30 s by default)."""
_REPORT_PATIENCE_SECONDS = 60.0
_TRANSIENT_STATUSES = frozenset({0, 429, 502, 503, 504})
_FINAL_CLAIM_STATUSES = frozenset({400, 401, 403, 404})
"""Claim refusals that waiting cannot change: a bad request, an unknown key, a key that may
not act for the agent, an agent that is gone."""
_CLAIM_RETRY_PAUSE_SECONDS = 0.5


class Retry(Exception):
    """Raised by a handler: this attempt failed, and another may succeed."""


class Fatal(Exception):
    """Raised by a handler: the task failed for good; no retry will fix it."""


def _transient(error: BaseException) -> bool:
    return isinstance(error, SwarmError) and error.status in _TRANSIENT_STATUSES


def _ends_the_worker(error: SwarmError) -> bool:
    """Tells whether a claim refused with `error` will be refused again however long one waits.

    Any other failure (an unexpected 500, an agent offline until its next heartbeat) is worth
    claiming again after a pause.
    """
    return error.status in _FINAL_CLAIM_STATUSES


def _retrying(stop: StopBaseT) -> AsyncRetrying:
    """Retries transient refusals with exponential backoff and full jitter, up to 5 s apart."""
    return AsyncRetrying(
        retry=retry_if_exception(_transient),
        wait=wait_random_exponential(multiplier=0.1, max=5.0),
        stop=stop,
        reraise=True,
    )


@dataclass(frozen=True)
class _Report:
    """A progress report (`percent` set) or a message (`content` set)."""

    percent: int | None = None
    message: str | None = None
    content: str | None = None


@dataclass(frozen=True)
class _Outcome:
    """How a handler ended: a result, or an error and whether another attempt may succeed."""

    result: Any = None
    error: str | None = None
    retryable: bool = True


_STOPPED = _Outcome(error="worker stopped before the task finished", retryable=True)
"""What a stopping worker reports for a task whose handler had not finished."""


class Context:
    """What a handler has besides its task: reports, and the task's cancellation signal.

    Reports are queued and sent in order in the background, so `progress` and `message` return
    at once and may be called from a coroutine or from a handler's thread alike. A progress
    report still waiting to go out when a newer one comes is replaced by it: a handler that
    reports every item of a long loop sends the latest figure, not a backlog.
    """

    def __init__(self, task: Task, sender: str, loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self._sender = sender
        self._loop = loop
        self._reports: deque[_Report | _Outcome] = deque()
        self._reported = asyncio.Event()
        """Set when a report is queued."""
        self._cancelled = threading.Event()
        self._cancelled_async = asyncio.Event()
        self._outcome: _Outcome | None = None
        """How the handler ended, once it has: what a stopping worker reports for it."""

    @property
    def cancelled(self) -> bool:
        """Tells whether the task was cancelled (or is no longer this worker's to finish)."""
        return self._cancelled.is_set()

    async def wait_cancelled(self) -> None:
        """Returns once the task is cancelled."""
        await self._cancelled_async.wait()

    def progress(self, percent: int, message: str | None = None) -> None:
        """Reports progress (0 to 100) with an optional note; it also renews the lease."""
        self._queue(_Report(percent=percent, message=message))

    def message(self, content: str) -> None:
        """Adds a message from this agent to the task's conversation."""
        self._queue(_Report(content=content))

    def _queue(self, item: _Report | _Outcome) -> None:
        self._loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: _Report | _Outcome) -> None:
        """Queues `item` (on the event loop's thread), replacing a progress report it follows."""
        if _is_progress(item) and self._reports and _is_progress(self._reports[-1]):
            self._reports[-1] = item
        else:
            self._reports.append(item)
        self._reported.set()

    async def _next_report(self) -> _Report | _Outcome:
        """Returns the oldest queued report, waiting for one."""
        while not self._reports:
            self._reported.clear()
            await self._reported.wait()
        return self._reports.popleft()

    def _cancel(self) -> None:
        """Raises the cancellation signal (on the event loop's thread)."""
        if not self._cancelled.is_set():
            log.info("task no longer held; signalling its handler", extra={"task_id": self.task.id})
        self._cancelled.set()
        self._cancelled_async.set()


class Worker:
    """An agent that claims tasks through the gateway and runs the handler of each one's kind.

    Handlers are registered with `@worker.task("kind")`, as `def handler(task, ctx)` or
    `async def handler(task, ctx)`; they return the result (any JSON value) or raise: `Retry` or
    any other exception fails the attempt (retried while attempts remain), `Fatal` fails the task
    for good. Unless `capabilities` is given, the agent declares the kinds it has handlers for.
    It makes its calls over two HTTP/2 connections, one for claims and one for the rest, unless
    `http2` is false (see `AsyncClient`). A heartbeat unanswered for twice its pause (at least
    5 s) is given up, and both connections with it: a connection gone silent (a NAT or load
    balancer that dropped it without a word) is replaced before the agent's heartbeats lapse.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        name: str = "python-worker",
        capabilities: list[str] | None = None,
        concurrency: int = 4,
        kind: str = "python",
        heartbeat_interval: float = 5.0,
        grace_period: float = 30.0,
        http2: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._base_url = base_url
        self._api_key = api_key
        self.name = name
        self._capabilities = capabilities
        self.concurrency = concurrency
        self._kind = kind
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._http2 = http2
        self._handlers: dict[str, Handler] = {}
        self._held: dict[str, tuple[Context, asyncio.Task[None]]] = {}
        self._taken = asyncio.Event()
        self._beat_pause = heartbeat_interval
        """The pause the heartbeat is waiting out."""
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        """Raised by a second stop: running handlers get no more grace."""
        self._refusal: SwarmError | None = None
        """The claim refusal that stopped the worker, raised by `run` once it has drained."""
        self._reconnect: asyncio.Event | None = None
        """Raised when a heartbeat timed out: claims move to a new connection."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.agent_id: str | None = None

    def task(self, kind: str) -> Callable[[Handler], Handler]:
        """Registers the decorated function as the handler of tasks of `kind`."""

        def register(handler: Handler) -> Handler:
            self._handlers[kind] = handler
            return handler

        return register

    def run(self) -> None:
        """Works until SIGINT or SIGTERM, then finishes or releases what it holds.

        Raises `SwarmError` when a claim was refused for good (a revoked key, a deleted agent).
        """
        asyncio.run(self.run_async(handle_signals=True))

    def stop(self) -> None:
        """Asks a running worker to stop, from any thread, as SIGTERM does.

        Asked again, it stops without waiting out the grace period.
        """
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # it stopped already: its loop is closed
                self._loop.call_soon_threadsafe(self._ask_to_stop)

    def _ask_to_stop(self) -> None:
        """Stops the worker (on the event loop's thread); a second time, hurries it."""
        assert self._stop is not None and self._hurry is not None
        if self._stop.is_set():
            if not self._hurry.is_set():
                log.warning("asked again to stop: no more grace for running handlers")
            self._hurry.set()
        self._stop.set()

    async def run_async(self, handle_signals: bool = False) -> None:
        """Works until `stop()` (or, with `handle_signals`, SIGINT or SIGTERM), as `run` does."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._hurry = asyncio.Event()
        self._taken = asyncio.Event()  # an event serves the loop it was first awaited on
        self._refusal = None
        if handle_signals:
            self._handle_signals()
        async with AsyncClient(self._base_url, self._api_key, http2=self._http2) as client:
            joining: asyncio.Task[Agent] = asyncio.create_task(
                _retrying(stop_after_delay(_REPORT_PATIENCE_SECONDS))(
                    client.join_agent,
                    self.name,
                    kind=self._kind,
                    capabilities=self._capabilities or sorted(self._handlers),
                    max_concurrency=self.concurrency,
                )
            )
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait({joining, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not joining.done():  # stopped while the gateway was still out of reach
                joining.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await joining
                log.info("worker stopped before it joined")
                return
            agent = joining.result()
            self.agent_id = str(agent.id)
            self.name = str(agent.name)  # an agent key's own agent may go by another name
            log.info("worker joined", extra={"agent_id": self.agent_id, "agent": agent.name})
            beats = asyncio.create_task(self._beat(client))
            beats.add_done_callback(self._stop_if_beats_end)
            try:
                await self._claim_until_stopped(client)
                await self._drain(client)
            finally:
                beats.cancel()
                # A beat that died stopped the worker and was logged by its callback.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await beats
        log.info("worker stopped", extra={"agent_id": self.agent_id})
        if self._refusal is not None:
            raise self._refusal

    def _handle_signals(self) -> None:
        """Makes SIGINT and SIGTERM stop the worker, and a second one hurry it."""
        assert self._loop is not None
        loop = self._loop
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._ask_to_stop)
            except NotImplementedError:  # Windows' event loops take no signal handlers
                signal.signal(signum, lambda *_: loop.call_soon_threadsafe(self._ask_to_stop))

    def _stop_if_beats_end(self, beats: asyncio.Task[None]) -> None:
        """Stops the worker when its heartbeats end on their own.

        Without them its leases would lapse while it went on claiming.
        """
        if beats.cancelled() or self._stop is None:
            return
        log.error("heartbeats stopped; stopping", exc_info=beats.exception())
        self._stop.set()

    async def _claim_until_stopped(self, client: AsyncClient) -> None:
        """Claims while slots are free; the claimed tasks report over `client`.

        Claims wait for work on a connection of their own, closed the moment the worker stops
        claiming: that ends a waiting claim at the gateway, which an abandoned HTTP/2 request
        does not, so it cannot take a task the draining worker would never run. When a
        heartbeat times out, the claims' connection is suspect too: the waiting claim is given
        up and the next goes out on a new connection.
        """
        assert self._stop is not None
        slots = asyncio.Semaphore(self.concurrency)
        stopping = asyncio.create_task(self._stop.wait())
        while not self._stop.is_set():
            async with AsyncClient(self._base_url, self._api_key, http2=self._http2) as claims:
                await self._claim_over(claims, client, slots, stopping)
        stopping.cancel()

    async def _claim_over(
        self,
        claims: AsyncClient,
        client: AsyncClient,
        slots: asyncio.Semaphore,
        stopping: asyncio.Task[Any],
    ) -> None:
        """Claims over `claims` until the worker stops or a heartbeat times out."""
        assert self._stop is not None and self._reconnect is not None
        assert self.agent_id is not None
        while not self._stop.is_set():
            taken = await _take_slots(slots, stopping)
            if not taken:
                return
            if self._reconnect.is_set():  # a heartbeat timed out while every slot was busy
                self._leave_connection(slots, taken)
                return
            claim: asyncio.Task[list[Task]] = asyncio.create_task(
                _retrying(stop_never)(claims.claim_tasks, self.agent_id, taken, _CLAIM_WAIT_SECONDS)
            )
            reconnect = asyncio.create_task(self._reconnect.wait())
            await asyncio.wait({claim, stopping, reconnect}, return_when=asyncio.FIRST_COMPLETED)
            reconnect.cancel()
            if not claim.done():
                claim.cancel()
                with contextlib.suppress(asyncio.CancelledError, SwarmError):
                    await claim
                self._leave_connection(slots, taken)
                return
            try:
                tasks = claim.result()
            except SwarmError as error:
                tasks = []
                if _ends_the_worker(error):
                    log.error("claim refused; stopping", extra={"error": str(error)})
                    self._refusal = error
                    self._stop.set()
                else:
                    log.warning("claim failed; retrying", extra={"error": str(error)})
                    await asyncio.wait({stopping}, timeout=_CLAIM_RETRY_PAUSE_SECONDS)
            for _ in range(taken - len(tasks)):
                slots.release()
            for task in tasks:
                self._start(client, task, slots)

    def _leave_connection(self, slots: asyncio.Semaphore, taken: int) -> None:
        """Gives back the `taken` slots of a claim not sent or given up.

        After a heartbeat that timed out, it also lowers that signal: the next claim goes out on
        a new connection.
        """
        for _ in range(taken):
            slots.release()
        assert self._reconnect is not None
        if self._reconnect.is_set():
            self._reconnect.clear()
            log.warning(
                "a heartbeat timed out; claiming over a new connection",
                extra={"agent_id": self.agent_id},
            )

    def _start(self, client: AsyncClient, task: Task, slots: asyncio.Semaphore) -> None:
        assert self._loop is not None
        ctx = Context(task, self.name, self._loop)
        job = asyncio.create_task(self._work(client, ctx, slots))
        self._held[task.id] = (ctx, job)
        if self._pause_for(float(task.timeout_seconds)) < self._beat_pause:
            self._taken.set()

    async def _work(self, client: AsyncClient, ctx: Context, slots: asyncio.Semaphore) -> None:
        """Runs the handler while its reports go out in order, then reports the outcome.

        The slot stays taken until the outcome is acknowledged: until then the queue counts
        the task against the agent's concurrency, and a claim for it would come back short.
        """
        reports = asyncio.create_task(self._send_reports(client, ctx))
        try:
            ctx._outcome = await self._handle(ctx)
            ctx._queue(ctx._outcome)
            await reports
        except asyncio.CancelledError:
            reports.cancel()
            raise
        finally:
            self._held.pop(ctx.task.id, None)
            slots.release()

    async def _handle(self, ctx: Context) -> _Outcome:
        task = ctx.task
        handler = self._handlers.get(task.kind)
        if handler is None:
            # Claims match capabilities, not kinds: another worker may have the handler.
            return _Outcome(error=f"no handler for kind {task.kind!r}", retryable=True)
        try:
            if inspect.iscoroutinefunction(handler):
                result = await handler(task, ctx)
            else:
                result = await _in_thread(functools.partial(handler, task, ctx))
            if inspect.isawaitable(result):  # an async callable object, or a wrapped coroutine
                result = await result
        except Fatal as error:
            return _Outcome(error=str(error) or "fatal", retryable=False)
        except Exception as error:
            log.warning("handler failed", exc_info=True, extra={"task_id": task.id})
            return _Outcome(error=f"{type(error).__name__}: {error}", retryable=True)
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as error:
            return _Outcome(error=f"the result is not JSON: {error}", retryable=False)
        return _Outcome(result=result)

    async def _send_reports(self, client: AsyncClient, ctx: Context) -> None:
        """Sends the task's reports in order, ending with its outcome."""
        while True:
            item = await ctx._next_report()
            try:
                if isinstance(item, _Outcome):
                    await _retrying(stop_never)(_report_outcome, client, ctx.task, item)
                    return
                await _retrying(stop_after_delay(_REPORT_PATIENCE_SECONDS))(
                    _report, client, ctx, item
                )
            except SwarmError as error:
                log.warning("report refused", extra={"task_id": ctx.task.id, "error": str(error)})
                if error.status in (404, 409):
                    ctx._cancel()  # the attempt is no longer this worker's
                if isinstance(item, _Outcome):
                    return

    def _heartbeat_pause(self) -> float:
        """Returns how long the heartbeat waits.

        That is `heartbeat_interval` while idle; while holding tasks, at most a second and a
        third of the shortest lease, so leases never lapse under a handler that does not report.
        """
        if not self._held:
            return self._heartbeat_interval
        shortest_lease = min(float(ctx.task.timeout_seconds) for ctx, _ in self._held.values())
        return self._pause_for(shortest_lease)

    def _pause_for(self, lease: float) -> float:
        """Returns the heartbeat's pause while it holds a task whose lease lasts `lease` s."""
        return min(self._heartbeat_interval, _BUSY_BEAT_SECONDS, lease / 3)

    async def _beat(self, client: AsyncClient) -> None:
        """Heartbeats listing the held tasks; signals the handlers of tasks no longer held.

        A task taken while the heartbeat waits shortens its wait, when its lease asks for a
        shorter pause than the one being waited out.
        """
        assert self.agent_id is not None and self._reconnect is not None
        loop = asyncio.get_running_loop()
        last_beat = loop.time()  # joining counted as one
        while True:
            self._taken.clear()
            self._beat_pause = self._heartbeat_pause()
            wait = last_beat + self._beat_pause - loop.time()
            if wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._taken.wait(), timeout=wait)
                    continue
            last_beat = loop.time()
            held = list(self._held)
            deadline = max(2 * self._beat_pause, _MIN_BEAT_DEADLINE_SECONDS)
            try:
                # A read that times out ends its HTTP/2 connection (httpcore), so the next
                # beat, and every call after it, goes out on a new one.
                answer = await client.heartbeat(self.agent_id, held, timeout=deadline)
            except SwarmError as error:
                log.warning(
                    "heartbeat failed", extra={"agent_id": self.agent_id, "error": str(error)}
                )
                if isinstance(error.__cause__, httpx.TimeoutException):
                    self._reconnect.set()
                continue
            for task_id in answer.get("cancel", []):
                if task_id in self._held:
                    self._held[task_id][0]._cancel()

    async def _drain(self, client: AsyncClient) -> None:
        """Gives running handlers the grace period, then releases what is left."""
        if not self._held:
            return
        assert self._hurry is not None
        jobs = [job for _, job in self._held.values()]
        log.info("stopping: waiting for running handlers", extra={"running": len(jobs)})
        finished = asyncio.ensure_future(asyncio.wait(jobs))
        hurried = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait(
            {finished, hurried}, timeout=self._grace_period, return_when=asyncio.FIRST_COMPLETED
        )
        finished.cancel()  # the wait, not the jobs
        hurried.cancel()
        late = list(self._held.values())
        if not late:
            return
        log.warning("grace period over; releasing tasks", extra={"tasks": len(late)})
        for ctx, job in late:
            ctx._cancel()
            job.cancel()
        await asyncio.gather(*(job for _, job in late), return_exceptions=True)
        # Their jobs are gone: report the outcome of a handler that finished (its report was
        # still on its way), and fail the others' attempts (retryable) so that the queue runs
        # them again without waiting for their leases to lapse.
        await asyncio.gather(
            *(
                _retrying(stop_after_delay(5.0))(
                    _report_outcome, client, ctx.task, ctx._outcome or _STOPPED
                )
                for ctx, _ in late
            ),
            return_exceptions=True,
        )


def _is_progress(item: _Report | _Outcome) -> bool:
    return isinstance(item, _Report) and item.percent is not None


def _in_thread(call: Callable[[], Any]) -> asyncio.Future[Any]:
    """Runs a plain handler in a thread of its own, answering on the event loop.

    The thread is a daemon, unlike an executor's, so a handler that outlasts the grace period
    cannot keep the stopped worker's process alive.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if answer.cancelled():
            return
        if error is None:
            answer.set_result(result)
        else:
            answer.set_exception(error)

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (call(), None)
        except BaseException as error:
            outcome = (None, error)
        with contextlib.suppress(RuntimeError):  # the loop closed: the answer has no reader
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="swarm-handler", daemon=True).start()
    return answer


async def _take_slots(slots: asyncio.Semaphore, stopping: asyncio.Task[Any]) -> int:
    """Waits for a free slot, then takes every free one (at most a claim's worth)."""
    first = asyncio.create_task(slots.acquire())
    await asyncio.wait({first, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not first.done():
        first.cancel()
        return 0
    taken = 1
    while taken < _MAX_CLAIM and not slots.locked():
        await slots.acquire()
        taken += 1
    return taken


async def _report(client: AsyncClient, ctx: Context, report: _Report) -> None:
    if report.content is not None:
        await client.post_message(ctx.task.id, ctx._sender, report.content, role="agent")
    elif report.percent is not None:
        await client.report_progress(ctx.task, report.percent, report.message)


async def _report_outcome(client: AsyncClient, task: Task, outcome: _Outcome) -> None:
    if outcome.error is None:
        await client.complete_task(task, outcome.result)
    else:
        await client.fail_task(task, outcome.error, outcome.retryable)
