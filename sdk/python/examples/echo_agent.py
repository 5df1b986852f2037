"""An agent that echoes: it answers each `echo` task with its payload and reports progress.

Run it against a local Swarm (`make run`):

    SWARM_KEY=<admin or agent key> python sdk/python/examples/echo_agent.py

then submit work with `swarm task create --title hi --kind echo --capability echo`. Stop it
with Ctrl-C: it finishes what it holds first.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from swarm_sdk import Context, Task, Worker

worker = Worker(
    base_url=os.environ.get("SWARM_URL", "http://127.0.0.1:8080"),
    api_key=os.environ.get("SWARM_KEY"),
    name=os.environ.get("SWARM_AGENT_NAME", "echo-agent"),
    concurrency=4,
    heartbeat_interval=float(os.environ.get("SWARM_HEARTBEAT_SECONDS", "5")),
)


@worker.task("echo")
async def echo(task: Task, ctx: Context) -> Any:
    """Answers with the payload, a step at a time, unless the task is cancelled meanwhile."""
    for step in range(1, 5):
        if ctx.cancelled:
            return None
        ctx.progress(step * 25, f"step {step} of 4")
        await asyncio.sleep(0.05)
    ctx.message(f"echoing {task.title!r}")
    return task.payload


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run()
