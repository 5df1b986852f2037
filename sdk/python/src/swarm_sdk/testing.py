"""`local_swarm`: a real Swarm for tests and benchmarks of code that uses this SDK.

It starts `swarm up` (the binary you name) on free loopback ports over the database you name,
with a fresh admin key, waits until it answers, and stops it afterwards::

    with local_swarm("swarm", "sqlite:///tmp/test.db") as (url, key):
        client = Client(url, api_key=key)
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

_ROLES = ("gateway", "tasks", "agents", "cache", "metrics")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@contextmanager
def local_swarm(
    binary: str, database_url: str, env: dict[str, str] | None = None, start_seconds: float = 30
) -> Iterator[tuple[str, str]]:
    """Runs `binary up` over `database_url` (with `env` added); yields its URL and admin key."""
    ports = dict(zip(_ROLES, _free_ports(len(_ROLES)), strict=True))
    flags = [
        part for role, port in ports.items() for part in (f"--{role}-addr", f"127.0.0.1:{port}")
    ]
    key = "swarm_local_" + secrets.token_hex(24)
    process = subprocess.Popen(
        [binary, "up", "--database-url", database_url, *flags],
        env={**os.environ, "SWARM_ADMIN_KEY": key, "RUST_LOG": "warn", **(env or {})},
    )
    url = f"http://127.0.0.1:{ports['gateway']}"
    try:
        deadline = time.monotonic() + start_seconds
        while not _answers(url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("swarm did not start")
            time.sleep(0.1)
        yield url, key
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False
