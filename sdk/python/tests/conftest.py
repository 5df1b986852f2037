"""A real Swarm for the tests: `swarm up` (the binary `SWARM_BIN` names) on free loopback
ports with a known admin key, once over a fresh SQLite file and once over a fresh PostgreSQL
database on the server `SWARM_TEST_POSTGRES_URL` names (skipped when it is unset)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from swarm_sdk import Client
from swarm_sdk.testing import local_swarm

ROOT = Path(__file__).resolve().parents[3]

AGENT_TTL_SECONDS = 10
"""How long an agent stays online after a heartbeat: short, so lost workers show soon, and
twice the 5 s a worker waits for a heartbeat's answer before it tries a new connection."""


@dataclass(frozen=True)
class Swarm:
    url: str
    key: str

    def agent_call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        """Does an agent's part over REST."""
        response = httpx.post(
            f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {self.key}"}
        )
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path_factory.mktemp('swarm') / 'swarm.db'}"
        return
    server = os.environ.get("SWARM_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("SWARM_TEST_POSTGRES_URL is not set")
    name = "swarm_py_" + secrets.token_hex(6)
    admin = urlunsplit(urlsplit(server)._replace(path="/postgres"))
    subprocess.run(["psql", "-q", admin, "-c", f"CREATE DATABASE {name}"], check=True)
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        subprocess.run(["psql", "-q", admin, "-c", drop], check=True)


@pytest.fixture(scope="session")
def swarm(database_url: str) -> Iterator[Swarm]:
    binary = os.environ.get("SWARM_BIN", str(ROOT / "target/debug/swarm"))
    ttl = {"SWARM_AGENT_TTL_SECONDS": str(AGENT_TTL_SECONDS)}
    with local_swarm(binary, database_url, ttl) as (url, key):
        yield Swarm(url=url, key=key)


@pytest.fixture
def client(swarm: Swarm) -> Iterator[Client]:
    with Client(swarm.url, api_key=swarm.key) as admin:
        yield admin
