"""The clients against a real stack: every kind of call, errors, and the async twin."""

from __future__ import annotations

import asyncio
import copy
import http.server
import os
import pickle
import subprocess
import threading
import time
from pathlib import Path

import pytest

from swarm_sdk import AsyncClient, Client, SwarmError, Task
from swarm_sdk.testing import _free_ports

from .conftest import ROOT, Swarm


def _work(swarm: Swarm, agent: str, result: object) -> None:
    """Claims the one ready task as `agent` and completes it with `result`."""
    claimed = swarm.agent_call("/api/tasks/claim", {"agent_id": agent, "wait_seconds": 5})
    tasks = claimed["tasks"]
    assert isinstance(tasks, list) and tasks
    task_id = tasks[0]["id"]
    swarm.agent_call(f"/api/tasks/{task_id}/complete", {"agent_id": agent, "result": result})


def test_tasks_are_created_read_listed_and_waited_for(swarm: Swarm) -> None:
    with Client(swarm.url, api_key=swarm.key) as client:
        agent = swarm.agent_call("/api/agents", {"name": "py-worker", "max_concurrency": 5})
        task = client.create_task("summarise", kind="llm", payload={"n": 1}, priority=3)
        assert isinstance(task, Task)
        assert (task.title, task.kind, task.status, task.payload) == (
            "summarise",
            "llm",
            "queued",
            {"n": 1},
        )
        assert client.get_task(task.id) == task
        page = client.list_tasks(kind="llm")
        assert (page.total, page.items[0].id) == (1, task.id)

        worker = threading.Thread(target=_work, args=(swarm, agent["id"], {"words": 42}))
        worker.start()
        done = client.wait_for(task.id, timeout=10)
        worker.join()
        assert (done.status, done.result, done.finished) == ("completed", {"words": 42}, True)
        attempts = client.list_attempts(task.id)
        assert [a.outcome for a in attempts.items] == ["completed"]
        agents = client.list_agents()
        assert "py-worker" in [a.name for a in agents.items]


def test_refusals_raise_with_the_api_code(swarm: Swarm) -> None:
    with Client(swarm.url, api_key=swarm.key) as client:
        with pytest.raises(SwarmError) as missing:
            client.get_task("0190f5d2-0000-7000-8000-00000000abcd")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(SwarmError) as invalid:
            client.create_task("", priority=12)
        assert (invalid.value.status, invalid.value.code) == (400, "invalid_argument")
        task = client.create_task("never mind")
        assert client.cancel_task(task.id).status == "cancelled"
        with pytest.raises(SwarmError) as finished:
            client.cancel_task(task.id)
        assert finished.value.code == "failed_precondition"
        assert client.retry_task(task.id).status == "queued"
    with Client(swarm.url, api_key="swarm_wrong_key_0123456789abcdef01234567") as stranger:
        with pytest.raises(SwarmError) as unknown:
            stranger.list_tasks()
        assert unknown.value.status == 401
    with Client("http://127.0.0.1:9", api_key=swarm.key) as nowhere:
        with pytest.raises(SwarmError) as unreachable:
            nowhere.health()
        assert unreachable.value.status == 0


def test_batches_workflows_schedules_and_messages(swarm: Swarm) -> None:
    with Client(swarm.url, api_key=swarm.key) as client:
        batch = client.create_tasks([{"title": "a"}, {"title": "b", "delay_seconds": 60}])
        assert [t.status for t in batch] == ["queued", "scheduled"]
        workflow = client.create_workflow(
            "report",
            [
                {"key": "plan", "title": "plan"},
                {"key": "write", "title": "write", "depends_on": ["plan"]},
            ],
        )
        assert workflow.status == "running"
        assert workflow.tasks["write"].status == "waiting"
        assert client.get_workflow(workflow.id).tasks["plan"].status == "queued"
        assert client.cancel_workflow(workflow.id).status == "cancelled"
        assert client.list_workflows(status="cancelled").total == 1

        schedule = client.create_schedule(
            "nightly", "0 2 * * *", {"title": "backup"}, timezone="Europe/Paris"
        )
        assert (schedule.timezone, schedule.paused) == ("Europe/Paris", False)
        assert client.pause_schedule(schedule.id).paused is True
        assert client.resume_schedule(schedule.id).paused is False
        assert client.update_schedule(schedule.id, name="nightly-backup").name == "nightly-backup"
        assert client.list_schedules().total == 1
        client.delete_schedule(schedule.id)
        with pytest.raises(SwarmError):
            client.get_schedule(schedule.id)

        message = client.post_message(batch[0].id, "ada", "hello")
        assert message.content == "hello"
        assert client.list_messages(batch[0].id).items[0].sender == "ada"
        assert client.health()["status"] in ("healthy", "degraded")


def test_the_async_client_makes_the_same_calls(swarm: Swarm) -> None:
    async def scenario() -> None:
        async with AsyncClient(swarm.url, api_key=swarm.key) as client:
            task = await client.create_task("async", kind="py")
            assert (await client.get_task(task.id)).title == "async"
            cancelled = await client.cancel_task(task.id)
            assert (await client.wait_for(cancelled.id, timeout=5)).status == "cancelled"
            assert (await client.list_tasks(kind="py")).total == 1
            with pytest.raises(SwarmError) as missing:
                await client.get_workflow("0190f5d2-0000-7000-8000-00000000abcd")
            assert missing.value.code == "not_found"

    asyncio.run(scenario())


def test_finishing_a_task_claims_the_next_in_the_same_call(swarm: Swarm) -> None:
    async def scenario() -> None:
        async with AsyncClient(swarm.url, api_key=swarm.key) as client:
            agent = await client.join_agent("py-finisher", capabilities=["py-finish"])
            # Top priority: the stack is shared, and tasks other tests left queued that need
            # nothing are claimable by this agent too.
            needs = {"required_capabilities": ["py-finish"], "priority": 9}
            first = await client.create_task("first", **needs)
            await asyncio.sleep(0.01)  # the claim takes the oldest first
            second = await client.create_task("second", **needs)
            [held] = await client.claim_tasks(str(agent.id), 1)
            assert held.id == first.id
            with pytest.raises(SwarmError) as too_many:
                await client.finish_task(held, 1, claim_next=101)
            assert (too_many.value.status, too_many.value.code) == (400, "invalid_argument")
            assert (await client.get_task(first.id)).status == "active"

            done, claimed = await client.finish_task(held, {"ok": True}, claim_next=1)
            assert (done.status, done.result) == ("completed", {"ok": True})
            assert [task.id for task in claimed] == [second.id]
            assert claimed[0].status == "active"

            failed, none = await client.finish_task(claimed[0], error="no luck", retryable=False)
            assert (failed.status, failed.error, none) == ("failed", "no luck", [])

    asyncio.run(scenario())


def test_waiting_gives_up_at_the_timeout(swarm: Swarm) -> None:
    with Client(swarm.url, api_key=swarm.key) as client:
        task = client.create_task("nobody works on this", delay_seconds=3600)
        with pytest.raises(TimeoutError):
            client.wait_for(task.id, timeout=0.3)


def test_waiting_looks_once_more_at_the_timeout(swarm: Swarm) -> None:
    """A task that finishes between two looks, before the timeout, is no timeout: the last look
    is at the deadline (polls double to a second apart, so without that last look the wait
    below would sleep past its deadline and give up)."""
    with Client(swarm.url, api_key=swarm.key) as client:
        task = client.create_task("cancelled soon", delay_seconds=3600)
        canceller = threading.Timer(0.9, client.cancel_task, args=(task.id,))
        canceller.start()
        try:
            assert client.wait_for(task.id, timeout=1.45).status == "cancelled"
        finally:
            canceller.join()


def test_records_survive_copies_and_pickles(swarm: Swarm) -> None:
    with Client(swarm.url, api_key=swarm.key) as client:
        task = client.create_task("copied", payload={"deep": [1, 2]})
        page = client.list_tasks(per_page=1)
    for copied in (copy.copy(task), copy.deepcopy(task), pickle.loads(pickle.dumps(task))):
        assert copied == task and copied.payload == {"deep": [1, 2]}
    assert pickle.loads(pickle.dumps(page)) == page
    with pytest.raises(AttributeError):
        _ = task.no_such_field


def test_an_answer_that_is_not_swarm_s_raises_swarm_error() -> None:
    """A wrong base URL that reaches some other web server: a `SwarmError`, not a JSON error."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>not swarm</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            with Client(url) as client, pytest.raises(SwarmError) as refused:
                client.get_task("0190f5d2-0000-7000-8000-00000000abcd")
        finally:
            server.shutdown()
    assert (refused.value.status, refused.value.code) == (200, "invalid_response")


def test_health_reports_a_service_that_is_down_rather_than_raising(tmp_path: Path) -> None:
    binary = os.environ.get("SWARM_BIN", str(ROOT / "target/debug/swarm"))
    gateway, nowhere = _free_ports(2)
    url = f"http://127.0.0.1:{gateway}"
    # A gateway alone: every service it asks for health is out of reach.
    dead = f"http://127.0.0.1:{nowhere}"
    env = {
        **os.environ,
        "RUST_LOG": "warn",
        "SWARM_AUTH": "off",
        "SWARM_GATEWAY_DATABASE_URL": f"sqlite://{tmp_path / 'keys.db'}",
        **{f"SWARM_{role}_URL": dead for role in ("TASKS", "AGENTS", "CACHE", "METRICS")},
    }
    process = subprocess.Popen(
        [binary, "serve", "gateway", "--addr", f"127.0.0.1:{gateway}"], env=env
    )
    try:
        with Client(url) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    report = client.health()
                    break
                except SwarmError as error:
                    assert error.status == 0 and time.monotonic() < deadline, error
                    time.sleep(0.1)
        assert report["status"] == "unhealthy", report
    finally:
        process.terminate()
        process.wait(timeout=30)
