"""The Python SDK of Swarm: `Client` and `AsyncClient` over a gateway's REST API, and `Worker`."""

from .client import AsyncClient, Client
from .errors import SwarmError
from .models import Agent, Attempt, Message, Page, Record, Schedule, Task, Workflow
from .worker import Context, Fatal, Retry, Worker

__all__ = [
    "Agent",
    "AsyncClient",
    "Attempt",
    "Client",
    "Context",
    "Fatal",
    "Message",
    "Page",
    "Record",
    "Retry",
    "Schedule",
    "SwarmError",
    "Task",
    "Worker",
    "Workflow",
]
