"""What a call can fail with: one exception class per kind of answer a caller handles differently."""

from __future__ import annotations

from typing import Any


class RaftkvError(Exception):
    """An error answer: ``status`` and the JSON ``body`` (which always has ``error``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body.get('error', body)}")
        self.status = status
        self.body = body


class ClientError(RaftkvError):
    """The request itself is wrong (400, 413, 422): retrying it cannot help."""


class Unauthorized(RaftkvError):
    """401: the token is missing or wrong."""


class NotFound(RaftkvError):
    """404: no such key, lease or member."""


class Conflict(RaftkvError):
    """409: another change is in progress (retried for a while before it reaches the caller)."""


class PreconditionFailed(RaftkvError):
    """412: a compare-and-set whose condition did not hold; ``current`` is what the key holds now."""

    @property
    def current(self) -> Any:
        return self.body.get("current")


class Unavailable(RaftkvError):
    """503, or no member answered at all within the client's deadline."""


_BY_STATUS: dict[int, type[RaftkvError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
}


def error_for(status: int, body: dict[str, Any]) -> RaftkvError:
    if status in _BY_STATUS:
        return _BY_STATUS[status](status, body)
    if status == 503 or status >= 500:
        return Unavailable(status, body)
    return ClientError(status, body)
