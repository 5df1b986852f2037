"""The one error the client raises: the API's refusal, or an unreachable gateway."""

from __future__ import annotations


class SwarmError(Exception):
    """Raised when the gateway refuses a call (or cannot be reached: status 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
