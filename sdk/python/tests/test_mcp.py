"""`/mcp` driven by the official Python MCP client (`mcp` from PyPI) against a real stack."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from .conftest import ROOT, Swarm

FIRST = 9
"""The priority of the tasks these tests claim, so no task another test left queued comes first."""


@asynccontextmanager
async def session(
    swarm: Swarm, key: str, notices: list[types.ServerNotification] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with `key`, keeping the server's notifications in `notices`."""
    headers = {"Authorization": f"Bearer {key}"}

    async def keep(message: types.ServerNotification | Exception) -> None:
        if notices is not None and not isinstance(message, Exception):
            notices.append(message)

    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(f"{swarm.url}/mcp", http_client=http) as streams,
        ClientSession(streams[0], streams[1], message_handler=keep) as mcp,
    ):
        await mcp.initialize()
        yield mcp


def answer(result: Any) -> dict[str, Any]:
    """The JSON object a tool answered (or the error envelope it refused with)."""
    assert isinstance(result, types.CallToolResult)
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    parsed: dict[str, Any] = json.loads(block.text)
    return parsed


def agent_with_key(swarm: Swarm, capability: str) -> tuple[str, str]:
    """Registers an agent (heartbeating once) and issues its key."""
    agent = swarm.agent_call("/api/agents", {"name": capability, "capabilities": [capability]})
    swarm.agent_call(f"/api/agents/{agent['id']}/heartbeat", {})
    key = swarm.agent_call(
        "/api/keys", {"name": capability, "role": "agent", "agent_id": agent["id"]}
    )
    return str(agent["id"]), str(key["key"])


def test_the_tools_follow_the_key_s_role_and_the_rest_schemas(swarm: Swarm) -> None:
    client_key = str(swarm.agent_call("/api/keys", {"name": "mcp-client", "role": "client"})["key"])
    _, agent_key = agent_with_key(swarm, "mcp-" + secrets.token_hex(3))

    async def names(key: str) -> dict[str, types.Tool]:
        async with session(swarm, key) as mcp:
            return {tool.name: tool for tool in (await mcp.list_tools()).tools}

    admin = asyncio.run(names(swarm.key))
    assert {"create_task", "wait_for_task", "list_agents", "claim_tasks"} <= set(admin)
    client = asyncio.run(names(client_key))
    assert {"create_task", "get_task", "list_tasks", "cancel_task", "wait_for_task"} <= set(client)
    assert "list_agents" not in client and "claim_tasks" not in client
    agent = asyncio.run(names(agent_key))
    assert {"claim_tasks", "report_progress", "complete_task", "fail_task"} <= set(agent)
    assert "create_task" not in agent and "list_tasks" not in agent

    create = admin["create_task"].input_schema
    assert "title" in create["required"]
    assert create["properties"]["priority"]["maximum"] == 9
    assert create["properties"]["title"]["maxLength"] == 256
    assert admin["get_task"].input_schema["required"] == ["id"]


async def wait_while_an_agent_works(
    mcp: ClientSession, swarm: Swarm
) -> tuple[dict[str, Any], list[tuple[float, str | None]]]:
    """Creates a task, waits for it through MCP while an agent (over REST) works it; returns
    the task the wait ended with and the progress notifications it received."""
    capability = "mcp-" + secrets.token_hex(3)
    agent_id, _ = agent_with_key(swarm, capability)
    seen: list[tuple[float, str | None]] = []
    body = {"title": "draft", "required_capabilities": [capability], "priority": FIRST}
    created = answer(await mcp.call_tool("create_task", body))
    assert created["status"] == "queued"

    async def record(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    waiting = asyncio.create_task(
        mcp.call_tool("wait_for_task", {"id": created["id"]}, progress_callback=record)
    )
    await asyncio.sleep(0.5)
    claim = {"agent_id": agent_id, "wait_seconds": 5}
    held = await asyncio.to_thread(swarm.agent_call, "/api/tasks/claim", claim)
    task_id = held["tasks"][0]["id"]  # type: ignore[index]
    assert task_id == created["id"]
    report: dict[str, object] = {"agent_id": agent_id, "percent": 50, "message": "half"}
    await asyncio.to_thread(swarm.agent_call, f"/api/tasks/{task_id}/progress", report)
    await asyncio.sleep(0.6)
    done: dict[str, object] = {"agent_id": agent_id, "result": {"words": 3}}
    await asyncio.to_thread(swarm.agent_call, f"/api/tasks/{task_id}/complete", done)
    return answer(await waiting), seen


def assert_waited_through_progress(
    final: dict[str, Any], seen: list[tuple[float, str | None]]
) -> None:
    assert (final["status"], final["result"]) == ("completed", {"words": 3})
    assert (50.0, "active: half") in seen
    assert seen[-1][0] == 100.0


def test_a_task_created_and_waited_for_reports_progress_as_an_agent_works(swarm: Swarm) -> None:
    async def scenario() -> tuple[dict[str, Any], list[tuple[float, str | None]]]:
        async with session(swarm, swarm.key) as mcp:
            return await wait_while_an_agent_works(mcp, swarm)

    assert_waited_through_progress(*asyncio.run(scenario()))


def test_an_agent_key_claims_and_completes_through_mcp(swarm: Swarm) -> None:
    capability = "mcp-" + secrets.token_hex(3)
    agent_id, agent_key = agent_with_key(swarm, capability)
    task = swarm.agent_call(
        "/api/tasks", {"title": "by mcp", "required_capabilities": [capability], "priority": FIRST}
    )

    async def scenario() -> dict[str, Any]:
        async with session(swarm, agent_key) as mcp:
            claimed = answer(
                await mcp.call_tool("claim_tasks", {"agent_id": agent_id, "max_tasks": 1})
            )
            assert [held["id"] for held in claimed["tasks"]] == [task["id"]]
            report = {"id": task["id"], "agent_id": agent_id, "percent": 40}
            assert (
                answer(await mcp.call_tool("report_progress", report))["progress"]["percent"] == 40
            )
            done = {"id": task["id"], "agent_id": agent_id, "result": "fine"}
            return answer(await mcp.call_tool("complete_task", done))

    completed = asyncio.run(scenario())
    assert (completed["status"], completed["result"]) == ("completed", "fine")


def test_bad_input_and_another_tenant_s_task_are_clear_tool_errors(swarm: Swarm) -> None:
    secret = swarm.agent_call("/api/tasks", {"title": "not yours", "required_capabilities": ["x"]})
    client_key = str(swarm.agent_call("/api/keys", {"name": "mcp-other", "role": "client"})["key"])

    async def scenario() -> tuple[Any, Any, Any]:
        async with session(swarm, client_key) as mcp:
            empty = await mcp.call_tool("create_task", {"title": ""})
            other = await mcp.call_tool("get_task", {"id": secret["id"]})
            late = await mcp.call_tool("wait_for_task", {"id": secret["id"], "timeout_seconds": 0})
            return empty, other, late

    empty, other, late = asyncio.run(scenario())
    for refused, code in [
        (empty, "invalid_argument"),
        (other, "not_found"),
        (late, "invalid_argument"),
    ]:
        assert refused.is_error
        assert answer(refused)["error"]["code"] == code
    assert "title" in answer(empty)["error"]["message"]


def test_mcp_wants_a_key(swarm: Swarm) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    refused = httpx.post(f"{swarm.url}/mcp", json=body)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"


def test_a_task_reads_as_a_resource_and_a_subscription_names_its_changes(swarm: Swarm) -> None:
    capability = "mcp-" + secrets.token_hex(3)
    agent_id, _ = agent_with_key(swarm, capability)
    task = swarm.agent_call(
        "/api/tasks",
        {"title": "followed", "required_capabilities": [capability], "priority": FIRST},
    )
    uri = f"swarm://tasks/{task['id']}"

    notices: list[types.ServerNotification] = []

    async def scenario() -> list[str]:
        async with session(swarm, swarm.key, notices) as mcp:
            templates = (await mcp.list_resource_templates()).resource_templates
            assert [template.uri_template for template in templates] == ["swarm://tasks/{id}"]
            listed = [str(resource.uri) for resource in (await mcp.list_resources()).resources]
            assert listed == ["swarm://agents"]
            read = (await mcp.read_resource(uri)).contents[0]
            assert isinstance(read, types.TextResourceContents)
            assert json.loads(read.text)["status"] == "queued"
            claim = {"agent_id": agent_id, "wait_seconds": 5}
            await mcp.subscribe_resource(uri)
            beat = f"/api/agents/{agent_id}/heartbeat"
            await asyncio.to_thread(swarm.agent_call, beat, {})
            held = await asyncio.to_thread(swarm.agent_call, "/api/tasks/claim", claim)
            assert [job["id"] for job in held["tasks"]] == [task["id"]]  # type: ignore[attr-defined]
            # The agent works on: each report changes the task, until one change is named.
            for percent in range(1, 51):
                updated = [
                    str(notice.params.uri)
                    for notice in notices
                    if isinstance(notice, types.ResourceUpdatedNotification)
                ]
                if updated:
                    await mcp.unsubscribe_resource(uri)
                    return updated[:1]
                report = {"agent_id": agent_id, "percent": percent}
                path = f"/api/tasks/{task['id']}/progress"
                await asyncio.to_thread(swarm.agent_call, beat, {})
                await asyncio.to_thread(swarm.agent_call, path, report)
                await asyncio.sleep(0.3)
            return []

    assert asyncio.run(scenario()) == [uri]


def test_swarm_mcp_bridges_a_stdio_client_to_the_gateway(swarm: Swarm) -> None:
    binary = os.environ.get("SWARM_BIN", str(ROOT / "target/debug/swarm"))
    server = StdioServerParameters(
        command=binary,
        args=["mcp", "--url", swarm.url],
        env={"SWARM_KEY": swarm.key, "RUST_LOG": "warn"},
    )

    async def scenario() -> tuple[set[str], dict[str, Any], dict[str, Any]]:
        async with (
            stdio_client(server) as streams,
            ClientSession(streams[0], streams[1]) as mcp,
        ):
            await mcp.initialize()
            tools = {tool.name for tool in (await mcp.list_tools()).tools}
            created = answer(await mcp.call_tool("create_task", {"title": "over stdio"}))
            refused = answer(await mcp.call_tool("get_task", {"id": "not-a-uuid"}))
            assert_waited_through_progress(*await wait_while_an_agent_works(mcp, swarm))
            return tools, created, refused

    tools, created, refused = asyncio.run(scenario())
    assert {"create_task", "wait_for_task", "list_agents"} <= tools
    assert (created["title"], created["status"]) == ("over stdio", "queued")
    assert refused["error"]["code"] == "invalid_argument"


def test_a_key_holds_a_bounded_number_of_sessions(swarm: Swarm) -> None:
    key = str(swarm.agent_call("/api/keys", {"name": "mcp-many", "role": "client"})["key"])
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
    }
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "counting", "version": "1"},
        },
    }

    def open_session() -> httpx.Response:
        return httpx.post(f"{swarm.url}/mcp", json=hello, headers=headers)

    opened = [open_session() for _ in range(16)]
    assert all(response.status_code == 200 for response in opened)
    refused = open_session()
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    respelled = {**headers, "Authorization": f"bearer   {key}"}
    also_refused = httpx.post(f"{swarm.url}/mcp", json=hello, headers=respelled)
    assert also_refused.status_code == 429, "the same key however the scheme is spelled"
    first = opened[0].headers["mcp-session-id"]
    ended = httpx.delete(f"{swarm.url}/mcp", headers={**headers, "mcp-session-id": first})
    assert ended.status_code in (200, 202, 204)
    assert open_session().status_code == 200
    other_key = str(swarm.agent_call("/api/keys", {"name": "mcp-few", "role": "client"})["key"])
    other = httpx.post(
        f"{swarm.url}/mcp", json=hello, headers={**headers, "Authorization": f"Bearer {other_key}"}
    )
    assert other.status_code == 200, "another key has sessions of its own"
    borrowed = httpx.post(
        f"{swarm.url}/mcp",
        json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
        headers={
            **headers,
            "Authorization": f"Bearer {other_key}",
            "mcp-session-id": opened[1].headers["mcp-session-id"],
        },
    )
    assert borrowed.status_code == 404, "a session answers only the key that opened it"
