"""``Client``: the synchronous raftkv client (scripts, the ``raftkv`` command, tests)."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from raftkv.client import calls
from raftkv.client.calls import Call
from raftkv.client.endpoints import Endpoints
from raftkv.client.errors import RaftkvError, error_for
from raftkv.client.options import ClientOptions
from raftkv.client.policy import Attempts, Done, error_body
from raftkv.client.txn import Txn, TxnOutcome
from raftkv.client.watch import WatchSession, member_of

T = TypeVar("T")


class Client:
    """``with Client(["http://127.0.0.1:8080"]) as kv: kv.put("k", 1)`` -- any one member will do."""

    def __init__(self, urls: Iterable[str], **options: Any) -> None:
        self.options = ClientOptions(**options)
        self.endpoints = Endpoints(urls)
        self.http = httpx.Client(
            timeout=self.options.request_timeout, verify=self.options.verify(), trust_env=False
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def call(self, call: Call[T]) -> T | None:
        """Carry out ``call`` under the retry rules (``raftkv.client.policy``)."""
        self._discover()
        attempts = Attempts(
            call, self.endpoints, time.monotonic() + self.options.deadline, self.options.headers(call.path)
        )
        while True:
            url, arguments = attempts.request()
            try:
                response = self.http.send(
                    self.http.build_request(call.method, url, **arguments), stream=call.stream
                )
                if call.stream and response.status_code >= 300:
                    response.read()
            except httpx.TransportError as e:
                outcome: Done[T | None] | Any = attempts.failed(url, e)
            else:
                outcome = attempts.answered(url, response)
            if isinstance(outcome, Done):
                return outcome.value
            time.sleep(outcome.pause)

    def _discover(self) -> None:
        if self.endpoints.discovered:
            return
        self.endpoints.discovered = True
        try:
            status = self.call(calls.status())
        except RaftkvError:
            return  # the call that follows reports the trouble
        if status is not None:
            self.endpoints.learn(status)

    # --- keys ------------------------------------------------------------------------------------------

    def get(self, key: str, consistency: str = "linearizable") -> dict[str, Any] | None:
        return self.call(calls.get(key, consistency))

    def put(
        self, key: str, value: object, *, lease: int | None = None, **conditions: object
    ) -> dict[str, Any]:
        return self._must(calls.put(key, value, lease=lease, **conditions))

    def delete(self, key: str) -> dict[str, Any] | None:
        return self.call(calls.delete(key))

    def list_keys(
        self, prefix: str = "", limit: int | None = None, start_after: str | None = None
    ) -> dict[str, Any]:
        """One page (``items``, ``revision``, ``next``); ``keys`` reads them all."""
        return self._must(calls.list_keys(prefix, limit, start_after=start_after))

    def keys(self, prefix: str = "", page_size: int | None = None) -> Generator[dict[str, Any], None, None]:
        """Every key under ``prefix`` in order, a page at a time (each page is a read of its own)."""
        start_after: str | None = None
        while True:
            page = self.list_keys(prefix, page_size, start_after)
            yield from page["items"]
            if (start_after := page["next"]) is None:
                return

    def wait(
        self, key: str, after_revision: int | None = None, timeout: float = 30.0
    ) -> dict[str, Any] | None:
        """The first change of ``key`` after ``after_revision`` (default: now), or None after ``timeout``."""
        return self.call(calls.wait(key, after_revision, timeout))

    def txn(self, txn: Txn | Mapping[str, object]) -> TxnOutcome:
        return self._must(calls.txn(txn.body() if isinstance(txn, Txn) else txn))

    def watch(
        self, prefix: str = "", after_revision: int | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """Every change under ``prefix`` after ``after_revision`` (default: the revision when iteration
        starts), for as long as the caller iterates, moving to another member when one goes away (see
        ``raftkv.client.watch``). Raises Compacted when the history no longer holds the changes."""
        after = self._must(calls.revision()) if after_revision is None else after_revision
        session = WatchSession(prefix, after)
        while True:
            stream = self._must(session.call())
            try:
                for line in stream.iter_lines():
                    if (change := session.line(line)) is not None:
                        yield change
            except httpx.TransportError:
                pass  # the member went away; resume on another
            finally:
                stream.close()
            self.endpoints.set_aside(member_of(stream))

    # --- leases ----------------------------------------------------------------------------------------

    def grant_lease(self, ttl: int, id: int | None = None) -> dict[str, Any]:
        """A lease of ``ttl`` seconds (``id`` and ``ttl`` in the answer); ``id`` picks its number."""
        return self._must(calls.grant_lease(ttl, id))

    def keepalive(self, lease: int) -> dict[str, Any]:
        """Restart the lease's time to live once; call it more often than every ``ttl`` seconds."""
        return self._must(calls.keepalive(lease))

    def revoke_lease(self, lease: int) -> dict[str, Any]:
        """End the lease now, deleting its keys."""
        return self._must(calls.revoke_lease(lease))

    def lease_info(self, lease: int) -> dict[str, Any]:
        """``ttl``, ``remaining`` seconds and ``keys`` of the lease."""
        return self._must(calls.lease_info(lease))

    def list_leases(self) -> dict[str, Any]:
        return self._must(calls.list_leases())

    # --- the cluster -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._must(calls.status())

    def members(self) -> dict[str, Any]:
        return self._must(calls.members())

    def add_member(self, member: str, url: str, *, voter: bool = True) -> dict[str, Any]:
        return self._must(calls.add_member(member, url, voter=voter))

    def remove_member(self, member: str) -> dict[str, Any]:
        return self._must(calls.remove_member(member))

    def promote_member(self, member: str) -> dict[str, Any]:
        return self._must(calls.promote_member(member))

    def transfer_leadership(self, member: str | None = None) -> dict[str, Any]:
        return self._must(calls.transfer_leadership(member))

    def save_backup(self, path: Path, progress: Any = None) -> dict[str, str]:
        """Stream a backup from the leader into ``path``; returns its headers (index, term, checksum)."""
        leader = (self.status().get("leader") or {}).get("url") or self.endpoints.pick()
        with self.http.stream(
            "GET", leader + "/cluster/snapshot", headers=self.options.headers("/cluster/snapshot")
        ) as answer:
            if answer.status_code != 200:
                answer.read()
                raise error_for(answer.status_code, error_body(answer))
            total = 0
            with path.open("wb") as out:
                for piece in answer.iter_bytes():
                    out.write(piece)
                    total += len(piece)
                    if progress is not None:
                        progress(total)
            return {
                name: answer.headers[name]
                for name in answer.headers
                if name.lower().startswith("x-raft-snapshot")
            }

    def _must(self, call: Call[T]) -> T:
        result = self.call(call)
        assert result is not None
        return result
