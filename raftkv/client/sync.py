"""``Client``: the synchronous raftkv client (scripts, the ``raftkv`` command, tests)."""

from __future__ import annotations

import time
from collections.abc import Iterable
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
                response = self.http.request(call.method, url, **arguments)
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

    def put(self, key: str, value: object, **conditions: object) -> dict[str, Any]:
        result = self.call(calls.put(key, value, **conditions))
        assert result is not None
        return result

    def delete(self, key: str) -> dict[str, Any] | None:
        return self.call(calls.delete(key))

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
