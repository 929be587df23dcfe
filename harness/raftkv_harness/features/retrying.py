"""One request sent until a node gives a definite answer, with the same Idempotency-Key on every attempt.

A timeout, a reset, a refused connection or a 5xx leaves the outcome unknown: the request may have been applied,
so it is sent again, to a node drawn afresh, with the same key; the store answers a retry of an applied write
with its first outcome instead of applying it twice. Any other status is definite and ends the retries.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

RETRY_PAUSE = 0.1  # between attempts, so a dead node is not hammered


@dataclass(frozen=True)
class Attempted:
    """The definite answer (None if the deadline came first) after ``attempts`` sends."""

    response: httpx.Response | None
    attempts: int

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code

    def body(self) -> Any:
        assert self.response is not None
        return self.response.json()


async def send(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    rng: random.Random,
    method: str,
    path: str,
    *,
    timeout: float,
    json: Any = None,
    idempotency_key: str | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response | None:
    """One attempt against a random node; None when no definite answer came within ``timeout``."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    with trio.move_on_after(timeout):
        try:
            response = await client.request(
                method, f"{rng.choice(urls)}{path}", json=json, headers=headers, params=params
            )
        except httpx.HTTPError:
            return None
        return None if response.status_code >= 500 else response
    return None


async def send_until_answered(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    rng: random.Random,
    method: str,
    path: str,
    *,
    json: Any = None,
    idempotency_key: str | None = None,
    timeout: float,
    give_up_after: float,
) -> Attempted:
    """Retry ``send`` until a definite answer, or ``give_up_after`` seconds."""
    attempts = 0
    with trio.move_on_after(give_up_after):
        while True:
            attempts += 1
            response = await send(
                client, urls, rng, method, path, timeout=timeout, json=json, idempotency_key=idempotency_key
            )
            if response is not None:
                return Attempted(response, attempts)
            await trio.sleep(RETRY_PAUSE)
    return Attempted(None, attempts)
