"""The rules both clients follow for one call, as a small state machine: after each attempt it says whether the
call is done (a value or an error) or should be tried again after a pause, and where."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from raftkv.client.calls import Call
from raftkv.client.endpoints import Endpoints
from raftkv.client.errors import RaftkvError, Unavailable, error_for

T = TypeVar("T")

FIRST_PAUSE = 0.05  # seconds before the first retry; doubled each time, up to MAX_PAUSE
MAX_PAUSE = 1.0
RETRIED_STATUSES = frozenset({503})


@dataclass
class Done(Generic[T]):
    value: T


@dataclass
class Retry:
    pause: float


@dataclass
class Attempts(Generic[T]):
    """One call carried out under ``endpoints``, giving up at ``deadline`` (a ``time.monotonic()``)."""

    call: Call[T]
    endpoints: Endpoints
    deadline: float
    headers: dict[str, str]
    pause: float = FIRST_PAUSE
    last_error: str = "no member was tried"

    def __post_init__(self) -> None:
        """A write's key is chosen once, here: every retry sends the same, so the write applies once."""
        if self.call.write and "Idempotency-Key" not in self.headers:
            key = self.call.idempotency_key or uuid.uuid4().hex
            self.headers = {**self.headers, "Idempotency-Key": key}

    def request(self) -> tuple[str, dict[str, Any]]:
        """Where to send the next attempt, and the arguments of ``httpx.Client.request`` for it."""
        url = self.endpoints.pick()
        arguments: dict[str, Any] = {"params": dict(self.call.params), "headers": self.headers}
        if self.call.json is not None:
            arguments["json"] = self.call.json
        if self.call.timeout is not None:
            arguments["timeout"] = self.call.timeout
        return url + self.call.path, arguments

    def failed(self, url: str, error: httpx.TransportError) -> Retry:
        """No answer from ``url`` (refused, reset, timed out): set it aside and try another member."""
        self.endpoints.set_aside(url.removesuffix(self.call.path))
        self.last_error = f"{url}: {type(error).__name__}: {error}"
        return self._again()

    def answered(self, url: str, response: httpx.Response) -> Done[T | None] | Retry:
        self.endpoints.answered(url.removesuffix(self.call.path))
        status = response.status_code
        if status < 300:
            return Done(self.call.parse(response))
        if status == 404 and self.call.not_found_is_none:
            return Done(None)
        body = error_body(response)
        if status in RETRIED_STATUSES or (status == 409 and self.call.retry_conflicts):
            self.last_error = f"{status}: {body.get('error')}"
            return self._again(float(response.headers.get("Retry-After", 0) or 0))
        raise error_for(status, body, self.call.errors)

    def _again(self, at_least: float = 0.0) -> Retry:
        pause = max(self.pause, min(at_least, MAX_PAUSE))
        if time.monotonic() + pause > self.deadline:
            raise Unavailable(503, {"error": f"gave up: {self.last_error}"})
        self.pause = min(self.pause * 2, MAX_PAUSE)
        return Retry(pause)


def error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": response.text[:200] or f"status {response.status_code}"}
    return body if isinstance(body, dict) and "error" in body else {"error": str(body)[:200]}


__all__ = ["Attempts", "Done", "RaftkvError", "Retry", "error_body"]
