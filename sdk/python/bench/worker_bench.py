"""How fast one Python worker process drains the queue through the gateway.

    python worker_bench.py SWARM_BIN DATABASE_URL [--tasks N] [--concurrency C]

starts `swarm up` (release build, rate limit off) over `DATABASE_URL`, queues N tasks with the
batch API, then starts one worker process (`Worker` with an async no-op handler and C slots) and
times it from its start until the last task completed. Reported: tasks per second end to end
(claim, run, complete, each over HTTP), the worker's CPU time per task, and its peak RSS.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from swarm_sdk import Client, Context, Task, Worker

CAPABILITY = "bench-noop"
_TICKS = os.sysconf("SC_CLK_TCK")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start_swarm(binary: str, database_url: str, key: str) -> tuple[subprocess.Popen[bytes], str]:
    gateway, tasks, agents, cache, metrics = _free_ports(5)
    addresses = {
        "--gateway-addr": gateway,
        "--tasks-addr": tasks,
        "--agents-addr": agents,
        "--cache-addr": cache,
        "--metrics-addr": metrics,
    }
    flags = [part for flag, port in addresses.items() for part in (flag, f"127.0.0.1:{port}")]
    env = {
        **os.environ,
        "SWARM_ADMIN_KEY": key,
        "SWARM_RATE_LIMIT_PER_SECOND": "0",
        "RUST_LOG": "warn",
    }
    process = subprocess.Popen([binary, "up", "--database-url", database_url, *flags], env=env)
    url = f"http://127.0.0.1:{gateway}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("swarm did not start")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]), int(fields[12])
    return (user + system) / _TICKS


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run_worker(url: str, key: str, concurrency: int) -> None:
    worker = Worker(
        url, key, name="bench-worker", capabilities=[CAPABILITY], concurrency=concurrency
    )

    @worker.task("noop")
    async def noop(task: Task, ctx: Context) -> Any:
        return None

    worker.run()


def main() -> None:
    """Runs the benchmark, or (with `--worker`) the worker process it times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("database_url")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--worker", nargs=2, metavar=("URL", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, key = args.worker
        _run_worker(url, key, args.concurrency)
        return

    key = "swarm_bench_" + secrets.token_hex(20)
    swarm, url = _start_swarm(args.binary, args.database_url, key)
    try:
        with Client(url, key, timeout=120) as client:
            batch = [
                {"title": "noop", "kind": "noop", "required_capabilities": [CAPABILITY]}
            ] * 1000
            for _ in range(args.tasks // 1000):
                client.create_tasks(batch)
            total = (args.tasks // 1000) * 1000
            command = [sys.executable, __file__, args.binary, args.database_url]
            command += ["--concurrency", str(args.concurrency), "--worker", url, key]
            started = time.monotonic()
            worker = subprocess.Popen(command)
            while client.list_tasks(status="completed", per_page=1).total < total:
                time.sleep(0.25)
            elapsed = time.monotonic() - started
            cpu, rss = _cpu_seconds(worker.pid), _peak_rss_mib(worker.pid)
            worker.terminate()
            worker.wait(timeout=30)
        backend = args.database_url.split(":", 1)[0]
        print(
            f"python worker ({backend}, {args.concurrency} slots, no-op handler): "
            f"{total} tasks in {elapsed:.2f} s = {total / elapsed:,.0f} tasks/s end to end; "
            f"worker CPU {cpu * 1e6 / total:,.0f} µs/task ({cpu / elapsed:.0%} of a core), "
            f"peak RSS {rss:.1f} MiB"
        )
    finally:
        swarm.terminate()
        swarm.wait(timeout=30)


if __name__ == "__main__":
    main()
