"""``AsyncClient``: the raftkv client for Trio programs, the same calls as ``Client`` awaited."""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx
import trio

from raftkv.client import calls
from raftkv.client.calls import Call
from raftkv.client.endpoints import Endpoints
from raftkv.client.errors import RaftkvError
from raftkv.client.options import ClientOptions
from raftkv.client.policy import Attempts, Done

T = TypeVar("T")


class AsyncClient:
    """``async with AsyncClient(["http://127.0.0.1:8080"]) as kv: await kv.put("k", 1)``."""

    def __init__(self, urls: Iterable[str], **options: Any) -> None:
        self.options = ClientOptions(**options)
        self.endpoints = Endpoints(urls)
        self.http = httpx.AsyncClient(
            timeout=self.options.request_timeout, verify=self.options.verify(), trust_env=False
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.aclose()

    async def call(self, call: Call[T]) -> T | None:
        """Carry out ``call`` under the retry rules (``raftkv.client.policy``)."""
        await self._discover()
        attempts = Attempts(
            call, self.endpoints, time.monotonic() + self.options.deadline, self.options.headers(call.path)
        )
        while True:
            url, arguments = attempts.request()
            try:
                response = await self.http.request(call.method, url, **arguments)
            except httpx.TransportError as e:
                outcome: Done[T | None] | Any = attempts.failed(url, e)
            else:
                outcome = attempts.answered(url, response)
            if isinstance(outcome, Done):
                return outcome.value
            await trio.sleep(outcome.pause)

    async def _discover(self) -> None:
        if self.endpoints.discovered:
            return
        self.endpoints.discovered = True
        try:
            status = await self.call(calls.status())
        except RaftkvError:
            return
        if status is not None:
            self.endpoints.learn(status)

    async def get(self, key: str, consistency: str = "linearizable") -> dict[str, Any] | None:
        return await self.call(calls.get(key, consistency))

    async def put(self, key: str, value: object, **conditions: object) -> dict[str, Any]:
        result = await self.call(calls.put(key, value, **conditions))
        assert result is not None
        return result

    async def delete(self, key: str) -> dict[str, Any] | None:
        return await self.call(calls.delete(key))
