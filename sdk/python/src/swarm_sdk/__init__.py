"""The Python client of Swarm: `Client` and `AsyncClient` over the REST API of a gateway."""

from .client import AsyncClient, Client
from .errors import SwarmError
from .models import Agent, Attempt, Message, Page, Record, Schedule, Task, Workflow

__all__ = [
    "Agent",
    "AsyncClient",
    "Attempt",
    "Client",
    "Message",
    "Page",
    "Record",
    "Schedule",
    "SwarmError",
    "Task",
    "Workflow",
]
