"""A worker process for the tests: `python agent.py URL KEY NAME KIND LOG [CONCURRENCY] [GRACE]`.

It handles tasks of `KIND` in a thread and of `KIND.async` as a coroutine, as each task's
payload says: `{"sleep": s}` works s seconds without reporting; `{"until_cancelled": true}`
works until the cancellation signal. Each start, end and signal seen is appended to `LOG` as
`event task_id unix_time`, which the tests read.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

from swarm_sdk import Context, Task, Worker

url, key, name, kind, log_path = sys.argv[1:6]
concurrency = int(sys.argv[6]) if len(sys.argv) > 6 else 8
grace = float(sys.argv[7]) if len(sys.argv) > 7 else 30.0
lock = threading.Lock()


def record(event: str, task: Task) -> None:
    with lock, open(log_path, "a") as log:
        log.write(f"{event} {task.id} {time.time()}\n")


worker = Worker(
    url,
    key,
    name=name,
    capabilities=[kind],
    concurrency=concurrency,
    heartbeat_interval=2.0,
    grace_period=grace,
)


@worker.task(kind)
def work(task: Task, ctx: Context) -> Any:
    record("start", task)
    if task.payload.get("until_cancelled"):
        while not ctx.cancelled:
            time.sleep(0.01)
        record("cancelled", task)
        return None
    time.sleep(task.payload.get("sleep", 0))
    record("end", task)
    return {"echo": task.payload}


@worker.task(f"{kind}.async")
async def work_async(task: Task, ctx: Context) -> Any:
    record("start", task)
    if task.payload.get("until_cancelled"):
        await ctx.wait_cancelled()
        record("cancelled", task)
        return None
    ctx.progress(50, "halfway")
    await asyncio.sleep(task.payload.get("sleep", 0))
    record("end", task)
    return {"echo": task.payload}


worker.run()
