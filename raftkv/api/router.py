"""Runs a client call on the leader: here when this node leads, else forwarded (or redirected) to the leader.

As etcd, Consul and rqlite do, any node accepts any call, so plain curl works against every node: a follower
relays the call to the leader and the leader's answer back (adding ``X-Raft-Leader``), or with
``?redirect=true`` answers 307 to the same path on the leader. A call that cannot be served ends in an
``Answer`` exception carrying the response to send instead (503 with ``Retry-After``, the relayed answer, ...).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import httpx
from quart import Response, g, request

from raftkv.api.errors import Answer, error_response
from raftkv.node import NotLeader, RaftNode, Unavailable
from raftkv.trace import TRACE_HEADER, StageClock

FORWARDED_HEADER: Final = "X-Raft-Forwarded"
LEADER_HEADER: Final = "X-Raft-Leader"
REVISION_HEADER: Final = "X-Raft-Revision"
TERM_HEADER: Final = "X-Raft-Term"
RELAYED_HEADERS: Final = (
    "Content-Type",
    "Location",
    "Retry-After",
    "Allow",
    "Idempotent-Replayed",
    REVISION_HEADER,
    TERM_HEADER,
)
FORWARDED_REQUEST_HEADERS: Final = ("Content-Type", "Authorization", "Idempotency-Key", TRACE_HEADER)

FORWARD_CONNECTIONS: Final = 64
"""Connections a follower keeps open to the leader for forwarded calls: one per concurrent call up to this,
which covers the 64-client benchmark; more calls wait for a free connection rather than open sockets without
bound."""

T = TypeVar("T")


def unavailable(message: str) -> Answer:
    return Answer(error_response(503, message, headers={"Retry-After": "1"}))


class LeaderRouter:
    def __init__(self, node: RaftNode[Any], tls: ssl.SSLContext | None) -> None:
        self.node = node
        self.tls = tls
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        limits = httpx.Limits(
            max_connections=FORWARD_CONNECTIONS, max_keepalive_connections=FORWARD_CONNECTIONS
        )
        # A second more than the leader's own deadline, so its 503 (and its reason) reaches the client.
        timeout = self.node.config.request_timeout + 1
        verify: ssl.SSLContext | bool = self.tls if self.tls is not None else True
        self.client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False, verify=verify)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def on_leader(self, redirect: bool, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` here if this node leads; otherwise raise the Answer that forwards or redirects it."""
        try:
            return await call()
        except Unavailable as e:
            raise unavailable(str(e)) from None
        except NotLeader:
            pass
        leader = self.node.leader
        if leader is None or leader[0] == self.node.config.id:
            raise unavailable("no leader is known at the moment")
        if request.headers.get(FORWARDED_HEADER):
            raise unavailable(f"this node is not the leader either; try {leader[1]}")
        target = leader[1] + raw_path_and_query()
        if redirect:
            raise Answer(
                error_response(
                    307,
                    "not the leader",
                    leader=leader[1],
                    headers={"Location": target, LEADER_HEADER: " ".join(leader)},
                )
            )
        raise Answer(await self._forward(target, leader))

    async def _forward(self, target: str, leader: tuple[str, str]) -> Response:
        assert self.client is not None
        headers = {FORWARDED_HEADER: self.node.config.id}
        headers |= {
            name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers
        }
        trace: StageClock | None = g.get("trace")
        if trace is not None:
            trace.mark("forwarded")
            sent_at = trace.elapsed()
        try:
            answer = await self.client.request(
                request.method, target, content=await request.get_data(as_text=False), headers=headers
            )
        except httpx.HTTPError as e:
            raise unavailable(f"the leader {leader[0]} did not answer: {type(e).__name__}") from None
        if trace is not None and TRACE_HEADER in answer.headers:
            trace.relay("leader.", answer.headers[TRACE_HEADER], sent_at)
        relayed = {name: answer.headers[name] for name in RELAYED_HEADERS if name in answer.headers}
        relayed[LEADER_HEADER] = " ".join(leader)
        return Response(answer.content, status=answer.status_code, headers=relayed)


def raw_path_and_query() -> str:
    """The request's path exactly as sent (percent-encoding intact) plus its query string."""
    path = request.scope.get("raw_path") or request.path.encode()
    query = request.scope.get("query_string", b"")
    return path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
