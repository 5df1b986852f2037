"""What the API answers: records with attribute access to every field, and pages of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar


class Record:
    """An object of the API: every field of its JSON reads as an attribute."""

    def __init__(self, fields: dict[str, Any]) -> None:
        if not isinstance(fields, dict):
            raise TypeError(f"a {type(self).__name__} is a JSON object, not {fields!r}")
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        # Reached only for names that are not attributes. A record that copy or pickle made
        # without calling __init__ has no `_fields` yet, and dunder lookups must fail plainly.
        fields = self.__dict__.get("_fields")
        if fields is None or name.startswith("__") or name not in fields:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        return fields[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields.get("id"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields!r})"

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as the API sent them."""
        return dict(self._fields)


class Task(Record):
    """A task: `id`, `title`, `status`, `progress`, `result`, `error`, `attempts`, ..."""

    FINAL = frozenset({"completed", "failed", "cancelled"})

    @property
    def finished(self) -> bool:
        """Tells whether the task reached a final status."""
        return self._fields.get("status") in self.FINAL


class Agent(Record):
    """An agent: `id`, `name`, `capabilities`, `status`, `max_concurrency`, ..."""


class Attempt(Record):
    """One attempt at a task: `attempt`, `agent_id`, `outcome`, `error`, times."""


class Workflow(Record):
    """A workflow: `id`, `name`, `status` and its `tasks` by key."""

    @property
    def tasks(self) -> dict[str, Task]:
        """Its tasks by key (empty in lists, which leave them out)."""
        return {key: Task(task) for key, task in self._fields.get("tasks", {}).items()}


class Schedule(Record):
    """A cron schedule: `id`, `name`, `cron`, `timezone`, `task`, `paused`, `next_run_at`, ..."""


class Message(Record):
    """A message of a task's conversation: `sender`, `role`, `content`, ..."""


R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Page(Generic[R]):
    """One page of a list."""

    items: list[R]
    page: int
    per_page: int
    total: int
    pages: int
