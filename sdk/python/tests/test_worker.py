"""`Worker` as users run it: real worker processes against a real Swarm."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from swarm_sdk import Client, Context, Fatal, SwarmError, Task, Worker
from swarm_sdk.testing import _free_ports
from swarm_sdk.worker import _ends_the_worker

from .conftest import AGENT_TTL_SECONDS, Swarm
from .silent_proxy import SilentProxy

AGENT = Path(__file__).with_name("agent.py")
EXAMPLE = Path(__file__).parents[1] / "examples" / "echo_agent.py"


class Agents:
    """Starts worker processes for one test and reads what their handlers did."""

    def __init__(self, swarm: Swarm, log: Path) -> None:
        self.swarm = swarm
        self.log = log
        self.kind = "py-" + secrets.token_hex(4)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, concurrency: int = 8, grace: float = 30.0
    ) -> subprocess.Popen[bytes]:
        args = [self.swarm.url, self.swarm.key, f"{self.kind}-{name}", self.kind, str(self.log)]
        process = subprocess.Popen(
            [sys.executable, str(AGENT), *args, str(concurrency), str(grace)]
        )
        self.processes.append(process)
        return process

    def create(
        self,
        client: Client,
        title: str,
        asynchronous: bool = False,
        fields: dict[str, Any] | None = None,
        **payload: Any,
    ) -> Task:
        """Submits a task for this test's workers, run as `payload` says."""
        kind = f"{self.kind}.async" if asynchronous else self.kind
        caps = [self.kind]
        return client.create_task(
            title, kind=kind, required_capabilities=caps, payload=payload, **(fields or {})
        )

    def events(self) -> list[tuple[str, str, float]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [(event, task_id, float(at)) for event, task_id, at in map(str.split, lines)]

    def when(self, event: str, task_id: str, timeout: float = 20.0) -> float:
        """Returns when `event` happened to the task, waiting for it up to `timeout` seconds."""
        return wait_until(
            lambda: next((at for e, t, at in self.events() if (e, t) == (event, task_id)), None),
            timeout,
            f"{event} of {task_id}",
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def wait_until(probe: Callable[[], float | None], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.02)
    return found


@pytest.fixture
def agents(swarm: Swarm, tmp_path: Path) -> Iterator[Agents]:
    started = Agents(swarm, tmp_path / "events.log")
    yield started
    started.stop()


def finished(client: Client, task_id: str, timeout: float = 30.0) -> Task:
    return client.wait_for(task_id, timeout=timeout)


def test_two_thousand_tasks_from_four_producers_complete_exactly_once(
    client: Client, agents: Agents
) -> None:
    worker = agents.start("fleet", concurrency=8)

    def produce(producer: int) -> list[str]:
        with Client(agents.swarm.url, agents.swarm.key) as own:
            return [
                agents.create(own, f"p{producer}-{n}", asynchronous=n % 2 == 0).id
                for n in range(500)
            ]

    with ThreadPoolExecutor(4) as producers:
        ids = [task_id for batch in producers.map(produce, range(4)) for task_id in batch]
    assert len(set(ids)) == 2000

    def all_done() -> float | None:
        done = client.list_tasks(kind=agents.kind, status="completed", per_page=1).total
        done += client.list_tasks(kind=f"{agents.kind}.async", status="completed", per_page=1).total
        return 1.0 if done == 2000 else None

    wait_until(all_done, 120, "completion of all 2,000 tasks")
    runs = Counter(task_id for event, task_id, _ in agents.events() if event == "start")
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1, "no task ran twice"
    for kind in (agents.kind, f"{agents.kind}.async"):
        for page in range(1, 11):
            for task in client.list_tasks(kind=kind, per_page=100, page=page).items:
                assert (task.status, task.attempts) == ("completed", 1)
                assert task.result == {"echo": {}}
    assert worker.poll() is None


def test_a_handler_working_three_leases_long_without_reporting_runs_once(
    client: Client, agents: Agents
) -> None:
    agents.start("patient")
    task = agents.create(client, "slow", fields={"timeout_seconds": 1}, sleep=3.5)
    done = finished(client, task.id)
    assert (done.status, done.attempts) == ("completed", 1)
    assert [a.outcome for a in client.list_attempts(task.id).items] == ["completed"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["polled", "awaited"])
def test_a_cancelled_task_s_handler_sees_the_signal_within_two_seconds(
    client: Client, agents: Agents, asynchronous: bool
) -> None:
    agents.start("cancellable")
    task = agents.create(client, "endless", asynchronous, until_cancelled=True)
    agents.when("start", task.id)
    time.sleep(0.3)
    cancelled_at = time.time()
    assert client.cancel_task(task.id).status == "cancelled"
    seen_at = agents.when("cancelled", task.id, timeout=5)
    assert seen_at - cancelled_at < 2.0


def test_a_killed_worker_s_tasks_go_to_another_within_the_agent_ttl(
    client: Client, agents: Agents
) -> None:
    doomed = agents.start("doomed", concurrency=2)
    tasks = [agents.create(client, f"held {n}", sleep=1) for n in range(2)]
    for task in tasks:
        agents.when("start", task.id)
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.time()
    agents.start("heir")
    for task in tasks:
        done = finished(client, task.id, timeout=AGENT_TTL_SECONDS + 15)
        assert (done.status, done.attempts) == ("completed", 2)
        starts = [at for e, t, at in agents.events() if (e, t) == ("start", task.id)]
        assert len(starts) == 2
        assert starts[1] - killed_at < AGENT_TTL_SECONDS + 5
        outcomes = [a.outcome for a in client.list_attempts(task.id).items]
        assert outcomes == ["agent_lost", "completed"]


def test_sigterm_finishes_running_tasks_within_the_grace_period(
    client: Client, agents: Agents
) -> None:
    worker = agents.start("graceful", grace=10)
    task = agents.create(client, "finishing", sleep=1)
    agents.when("start", task.id)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    done = client.get_task(task.id)
    assert (done.status, done.attempts) == ("completed", 1)


def test_a_stopping_worker_takes_no_new_task_while_it_finishes_the_running_ones(
    client: Client, agents: Agents
) -> None:
    """The claim that waited for work when the worker was told to stop must end at the
    gateway too, or it would take a task for a worker that is leaving."""
    worker = agents.start("departing", concurrency=2)
    running = agents.create(client, "running", sleep=3)
    agents.when("start", running.id)
    time.sleep(0.5)  # the free slot's claim now waits for work
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    arriving = agents.create(client, "arriving while the worker drains")
    time.sleep(1.0)
    assert client.get_task(arriving.id).status == "queued"
    assert worker.wait(timeout=10) == 0
    assert client.get_task(running.id).status == "completed"
    assert client.get_task(arriving.id).status == "queued"


def test_sigterm_releases_what_outlasts_the_grace_period(client: Client, agents: Agents) -> None:
    worker = agents.start("hasty", grace=0.5)
    task = agents.create(client, "too long", fields={"max_attempts": 3}, sleep=60)
    agents.when("start", task.id)
    stopped_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - stopped_at < 5
    released = client.get_task(task.id)
    assert released.status == "queued"
    assert released.error == "worker stopped before the task finished"


def test_a_handler_s_failures_follow_retry_and_fatal(client: Client, swarm: Swarm) -> None:
    """The same Worker in-process: a plain exception retries, `Fatal` fails for good."""
    kind = "py-" + secrets.token_hex(4)
    worker = Worker(swarm.url, swarm.key, name=kind, concurrency=2, heartbeat_interval=1.0)
    calls: Counter[str] = Counter()

    @worker.task(kind)
    def flaky(task: Task, _: object) -> object:
        calls[task.id] += 1
        if task.payload["mode"] == "fatal":
            raise Fatal("bad input")
        if calls[task.id] == 1:
            raise RuntimeError("first try fails")
        return {"opaque": object(), "nan": float("nan")}.get(task.payload["mode"], "ok")

    class Answerer:
        """A handler object whose call answers a coroutine, as a wrapped one may."""

        async def __call__(self, task: Task, _: object) -> object:
            await asyncio.sleep(0)
            return task.title

    worker.task(f"{kind}-object")(Answerer())

    runner = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    runner.start()
    try:

        def submit(mode: str, kind: str = kind, **fields: Any) -> Task:
            payload = {"mode": mode}
            return client.create_task(
                mode, kind=kind, payload=payload, required_capabilities=caps, **fields
            )

        caps = [kind]
        flake, fatal = submit("flaky"), submit("fatal")
        opaque, nan = submit("opaque"), submit("nan")
        unknown = submit("unknown", kind=f"{kind}-other", max_attempts=2)
        answered = submit("by an object", kind=f"{kind}-object")
        retried = finished(client, flake.id)
        assert (retried.status, retried.attempts, retried.result) == ("completed", 2, "ok")
        failed = finished(client, fatal.id)
        assert (failed.status, failed.attempts, failed.error) == ("failed", 1, "bad input")
        not_json = finished(client, opaque.id)
        assert not_json.status == "failed"
        assert not_json.error.startswith("the result is not JSON")
        not_a_number = finished(client, nan.id)
        assert not_a_number.status == "failed"
        assert not_a_number.error.startswith("the result is not JSON")
        # Another worker may have the handler: the attempt fails, the task is tried again.
        orphan = finished(client, unknown.id)
        assert (orphan.status, orphan.attempts) == ("failed", 2)
        assert orphan.error == f"no handler for kind '{kind}-other'"
        by_object = finished(client, answered.id)
        assert (by_object.status, by_object.result) == ("completed", "by an object")
    finally:
        worker.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()


def test_a_worker_whose_connections_go_silent_stays_online_and_runs_the_next_task_once(
    client: Client, swarm: Swarm
) -> None:
    """Its connections go silent (a middlebox forgot them; nothing closes them): the heartbeat
    it waits on is given up after 5 s with its connection, so the next beats go out
    on a new one before the agent lapses, and claims move to a new connection too, long before
    their own wait would end. (The claim left on the silent connection may take the next task
    at the gateway, for nobody; the heartbeats, which do not list it, take it back within
    seconds, and it runs once.)"""
    kind = "py-" + secrets.token_hex(4)
    runs: list[object] = []
    with SilentProxy(swarm.url) as proxy:
        worker = Worker(proxy.url, swarm.key, name=kind, concurrency=1, heartbeat_interval=1.0)

        @worker.task(kind)
        def record(task: Task, _: object) -> object:
            runs.append(task.payload)
            return task.payload

        runner = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
        runner.start()
        try:
            before = client.create_task(
                "before", kind=kind, payload=1, required_capabilities=[kind]
            )
            assert finished(client, before.id).status == "completed"
            proxy.silence()
            time.sleep(AGENT_TTL_SECONDS + 1)
            assert worker.agent_id is not None
            assert client.get_agent(worker.agent_id).status != "offline"
            after = client.create_task("after", kind=kind, payload=2, required_capabilities=[kind])
            assert (finished(client, after.id, timeout=20).status, runs) == ("completed", [1, 2])
        finally:
            worker.stop()
            runner.join(timeout=30)
    assert not runner.is_alive()


def test_the_example_agent_echoes(client: Client, swarm: Swarm) -> None:
    name = "echo-" + secrets.token_hex(4)
    env = {
        **os.environ,
        "SWARM_URL": swarm.url,
        "SWARM_KEY": swarm.key,
        "SWARM_AGENT_NAME": name,
        "SWARM_HEARTBEAT_SECONDS": "1",
    }
    example = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env)
    try:
        task = client.create_task("hi", kind="echo", payload={"say": "hi"})
        done = finished(client, task.id)
        assert (done.status, done.result) == ("completed", {"say": "hi"})
        messages = client.list_messages(task.id).items
        assert [m.content for m in messages] == ["echoing 'hi'"]
    finally:
        example.send_signal(signal.SIGTERM)
        assert example.wait(timeout=30) == 0


def test_with_an_agent_key_the_worker_is_that_key_s_agent(client: Client, swarm: Swarm) -> None:
    kind = "py-" + secrets.token_hex(4)
    own = swarm.agent_call("/api/agents", {"name": f"{kind}-own", "capabilities": [kind]})
    key = swarm.agent_call("/api/keys", {"name": kind, "role": "agent", "agent_id": own["id"]})
    worker = Worker(swarm.url, str(key["key"]), name="any name", concurrency=1)

    @worker.task(kind)
    async def answer(task: Task, _: object) -> object:
        return task.title

    runner = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    runner.start()
    try:
        task = client.create_task("mine", kind=kind, required_capabilities=[kind])
        done = finished(client, task.id)
        assert (done.status, done.result, done.agent_id) == ("completed", "mine", own["id"])
        assert worker.agent_id == own["id"]
        agent = client.get_agent(str(own["id"]))
        assert (agent.name, agent.max_concurrency) == (f"{kind}-own", 1)
    finally:
        worker.stop()
        runner.join(timeout=30)


def test_a_stopped_worker_runs_again_and_keeps_beating(client: Client, swarm: Swarm) -> None:
    """`run_async` in a second event loop: it works, and its heartbeats go on."""
    kind = "py-" + secrets.token_hex(4)
    worker = Worker(swarm.url, swarm.key, name=kind, concurrency=1, heartbeat_interval=1.0)

    @worker.task(kind)
    async def answer(task: Task, _: object) -> object:
        return task.title

    for run in ("first run", "second run"):
        runner = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
        runner.start()
        try:
            task = client.create_task(run, kind=kind, required_capabilities=[kind])
            assert finished(client, task.id).result == run
            assert worker.agent_id is not None
            beat = _last_heartbeat(client, worker.agent_id)
            time.sleep(2.5)
            assert _last_heartbeat(client, worker.agent_id) > beat
        finally:
            worker.stop()
            runner.join(timeout=30)
        assert not runner.is_alive()


def _last_heartbeat(client: Client, agent_id: str) -> datetime:
    return datetime.fromisoformat(client.get_agent(agent_id).last_heartbeat_at)


def test_a_worker_whose_key_is_revoked_stops_and_raises(client: Client, swarm: Swarm) -> None:
    """A claim refused for good stops the worker, and its run raises the refusal."""
    kind = "py-" + secrets.token_hex(4)
    own = swarm.agent_call("/api/agents", {"name": kind, "capabilities": [kind]})
    key = swarm.agent_call("/api/keys", {"name": kind, "role": "agent", "agent_id": own["id"]})
    worker = Worker(swarm.url, str(key["key"]), concurrency=1, heartbeat_interval=1.0)
    refusals: list[SwarmError] = []

    @worker.task(kind)
    def answer(task: Task, _: object) -> object:
        return task.title

    def run() -> None:
        try:
            asyncio.run(worker.run_async())
        except SwarmError as error:
            refusals.append(error)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        first = client.create_task("first", kind=kind, required_capabilities=[kind])
        assert finished(client, first.id).status == "completed"
        revoked = httpx.delete(
            f"{swarm.url}/api/keys/{key['id']}", headers={"Authorization": f"Bearer {swarm.key}"}
        )
        assert revoked.status_code == 204
        # The claim waiting now was let in before the revocation: a task ends its wait.
        client.create_task("second", kind=kind, required_capabilities=[kind])
        runner.join(timeout=30)
        assert not runner.is_alive()
        assert [(error.status, error.code) for error in refusals] == [(401, "unauthenticated")]
    finally:
        worker.stop()
        runner.join(timeout=30)


def test_a_worker_stopped_before_it_could_join_stops_at_once() -> None:
    """Asked to stop while the gateway is out of reach, it does not wait out its join."""
    (nowhere,) = _free_ports(1)
    worker = Worker(f"http://127.0.0.1:{nowhere}", "key", concurrency=1)
    runner = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    runner.start()
    time.sleep(0.5)
    worker.stop()
    runner.join(timeout=5)
    assert not runner.is_alive()
    assert worker.agent_id is None


def test_a_second_stop_cuts_the_grace_period_short(client: Client, swarm: Swarm) -> None:
    kind = "py-" + secrets.token_hex(4)
    worker = Worker(swarm.url, swarm.key, name=kind, concurrency=1, grace_period=600.0)

    @worker.task(kind)
    async def endless(task: Task, _: object) -> object:
        await asyncio.sleep(600)  # deaf to its signal
        return None

    runner = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    runner.start()
    try:
        task = client.create_task("endless", kind=kind, required_capabilities=[kind])
        deadline = time.monotonic() + 20
        while client.get_task(task.id).status != "active":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker.stop()
        time.sleep(0.5)
        assert runner.is_alive(), "the first stop waits for the handler"
        worker.stop()
        runner.join(timeout=10)
        assert not runner.is_alive()
        released = client.get_task(task.id)
        assert (released.status, released.error) == (
            "queued",
            "worker stopped before the task finished",
        )
    finally:
        worker.stop()
        runner.join(timeout=30)


def test_progress_reported_faster_than_it_goes_out_is_merged(client: Client, swarm: Swarm) -> None:
    """A handler that reports every item of a long loop sends its latest figure, not each one:
    the outcome does not wait behind thousands of progress calls."""
    kind = "py-" + secrets.token_hex(4)
    worker = Worker(swarm.url, swarm.key, name=kind, concurrency=1)

    @worker.task(kind)
    def busy(task: Task, ctx: Context) -> object:
        for item in range(20_000):
            ctx.progress(item * 100 // 20_000, f"item {item}")
        return "done"

    runner = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    runner.start()
    try:
        task = client.create_task("busy", kind=kind, required_capabilities=[kind])
        done = finished(client, task.id, timeout=15)
        assert (done.status, done.result) == ("completed", "done")
    finally:
        worker.stop()
        runner.join(timeout=30)


def test_only_a_claim_refusal_that_will_not_change_ends_the_worker() -> None:
    def ends(status: int, code: str) -> bool:
        return _ends_the_worker(SwarmError(status, code, "refused"))

    assert ends(400, "invalid_argument")
    assert ends(401, "unauthenticated")
    assert ends(403, "permission_denied")
    assert ends(404, "not_found")
    assert not ends(409, "failed_precondition")  # offline until the next heartbeat
    assert not ends(500, "internal")
    assert not ends(503, "unavailable")
