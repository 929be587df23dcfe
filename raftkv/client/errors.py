"""What a call can fail with: one exception class per kind of answer a caller handles differently."""

from __future__ import annotations

from collections.abc import Mapping
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


class LeaseNotFound(NotFound):
    """404 from a call that names a lease (a lease call, a put or transaction with ``lease``): the lease does
    not exist, or expired."""


class Compacted(RaftkvError):
    """410: the changes after the revision asked for are no longer in the history; read the keys again and
    watch from the revision of that read."""

    @property
    def compact_revision(self) -> int:
        return int(self.body.get("compact_revision", 0))


class TooLarge(ClientError):
    """413: the value or the request body is over the cluster's limit."""


class IdempotencyConflict(ClientError):
    """422: the ``Idempotency-Key`` was used before for another request."""


class Unavailable(RaftkvError):
    """503, or no member answered at all within the client's deadline."""


_BY_STATUS: dict[int, type[RaftkvError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    410: Compacted,
    412: PreconditionFailed,
    413: TooLarge,
    422: IdempotencyConflict,
}


def error_for(
    status: int, body: dict[str, Any], overrides: Mapping[int, type[RaftkvError]] | None = None
) -> RaftkvError:
    """The error of an answer; ``overrides`` are a call's own meanings of a status (404 on a lease)."""
    kind = (overrides or {}).get(status) or _BY_STATUS.get(status)
    if kind is not None:
        return kind(status, body)
    if status == 503 or status >= 500:
        return Unavailable(status, body)
    return ClientError(status, body)
