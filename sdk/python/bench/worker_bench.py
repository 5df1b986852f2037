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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from swarm_sdk import Client, Context, Task, Worker
from swarm_sdk.testing import local_swarm

CAPABILITY = "bench-noop"
_TICKS = os.sysconf("SC_CLK_TCK")


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

    no_rate_limit = {"SWARM_RATE_LIMIT_PER_SECOND": "0"}
    with local_swarm(args.binary, args.database_url, no_rate_limit) as (url, key):
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


if __name__ == "__main__":
    main()
