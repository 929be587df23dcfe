"""``AsyncClient``: the raftkv client for Trio programs, the same calls as ``Client`` awaited."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import httpx
import trio

from raftkv.client import calls
from raftkv.client.calls import Call
from raftkv.client.endpoints import Endpoints
from raftkv.client.errors import RaftkvError
from raftkv.client.options import ClientOptions
from raftkv.client.policy import Attempts, Done
from raftkv.client.txn import Txn, TxnOutcome
from raftkv.client.watch import WatchSession, member_of

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
                request = self.http.build_request(call.method, url, **arguments)
                response = await self.http.send(request, stream=call.stream)
                if call.stream and response.status_code >= 300:
                    await response.aread()
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

    async def _must(self, call: Call[T]) -> T:
        result = await self.call(call)
        assert result is not None
        return result

    # --- keys (as ``Client``'s) --------------------------------------------------------------------------

    async def get(self, key: str, consistency: str = "linearizable") -> dict[str, Any] | None:
        return await self.call(calls.get(key, consistency))

    async def put(
        self, key: str, value: object, *, lease: int | None = None, **conditions: object
    ) -> dict[str, Any]:
        return await self._must(calls.put(key, value, lease=lease, **conditions))

    async def delete(self, key: str) -> dict[str, Any] | None:
        return await self.call(calls.delete(key))

    async def list_keys(
        self, prefix: str = "", limit: int | None = None, start_after: str | None = None
    ) -> dict[str, Any]:
        return await self._must(calls.list_keys(prefix, limit, start_after=start_after))

    async def keys(
        self, prefix: str = "", page_size: int | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        start_after: str | None = None
        while True:
            page = await self.list_keys(prefix, page_size, start_after)
            for item in page["items"]:
                yield item
            if (start_after := page["next"]) is None:
                return

    async def wait(
        self, key: str, after_revision: int | None = None, timeout: float = 30.0
    ) -> dict[str, Any] | None:
        return await self.call(calls.wait(key, after_revision, timeout))

    async def txn(self, txn: Txn | Mapping[str, object]) -> TxnOutcome:
        return await self._must(calls.txn(txn.body() if isinstance(txn, Txn) else txn))

    async def watch(
        self, prefix: str = "", after_revision: int | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """As ``Client.watch``; close it when done (``async with contextlib.aclosing(kv.watch(...))``)."""
        after = await self._must(calls.revision()) if after_revision is None else after_revision
        session = WatchSession(prefix, after)
        while True:
            stream = await self._must(session.call())
            try:
                async for line in stream.aiter_lines():
                    if (change := session.line(line)) is not None:
                        yield change
            except httpx.TransportError:
                pass  # the member went away; resume on another
            finally:
                await stream.aclose()
            self.endpoints.set_aside(member_of(stream))

    # --- leases (as ``Client``'s) ------------------------------------------------------------------------

    async def grant_lease(self, ttl: int, id: int | None = None) -> dict[str, Any]:
        return await self._must(calls.grant_lease(ttl, id))

    async def keepalive(self, lease: int) -> dict[str, Any]:
        return await self._must(calls.keepalive(lease))

    async def revoke_lease(self, lease: int) -> dict[str, Any]:
        return await self._must(calls.revoke_lease(lease))

    async def lease_info(self, lease: int) -> dict[str, Any]:
        return await self._must(calls.lease_info(lease))

    async def list_leases(self) -> dict[str, Any]:
        return await self._must(calls.list_leases())

    async def keep_alive_forever(self, lease: int) -> NoReturn:
        """Refresh the lease every third of its ttl until cancelled: run it in a nursery of yours. Raises
        LeaseNotFound once the lease is gone (expired or revoked)."""
        while True:
            ttl = (await self.keepalive(lease))["ttl"]
            await trio.sleep(ttl / 3)

    @contextlib.asynccontextmanager
    async def keep_alive(self, lease: int) -> AsyncIterator[None]:
        """``async with kv.keep_alive(lease):`` -- the lease lives while the block runs; should it be lost
        all the same, the block is cancelled and LeaseNotFound raised (in an exception group)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.keep_alive_forever, lease)
            yield
            nursery.cancel_scope.cancel()
