"""``GET /events``: this node's Raft state and what happens to it, as server-sent events, for the dashboard.

The stream is built by watching the node from outside (``RaftNode.changed``), so neither the node nor the
core knows it exists. It carries:

- ``state`` at once and whenever the state changes (role, term, vote, leader, commit and applied index,
  the last log index and term, the tail of the log, the members);
- ``election`` for each step of an election seen between two states: a campaign, a vote cast, a leadership
  won, a step down to follower;
- ``traffic`` once a second: the peer messages sent and received in that second, per peer and kind
  (counts, so the stream stays cheap whatever the load).

The page that shows a cluster is served by one node and reads the stream of every member, so the answer
allows the origins of the members (CORS); the stream is read-only, with the security of ``/status``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Final, Literal
from urllib.parse import urlsplit

import trio
from pydantic import BaseModel
from quart import Response, request

from raftkv import kv
from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api
from raftkv.api.watch import KEEP_ALIVE, SSE_TYPE
from raftkv.node import RaftNode
from raftkv.raft.types import Role
from raftkv.traffic import TrafficKey

LOG_TAIL: Final = 10  # entries of the log each state carries
MIN_INTERVAL: Final = 0.1
"""Seconds at least between two state events: under load the commit index moves with every batch."""
TRAFFIC_INTERVAL: Final = 1.0  # seconds counted by each traffic event
CAMPAIGNING: Final[dict[Role, Literal["pre-campaign", "campaign"]]] = {
    Role.PRE_CANDIDATE: "pre-campaign",
    Role.CANDIDATE: "campaign",
}
EVENTS_PATH: Final = "/events"

operations = Operations[Api]()


@operations("getEvents")
async def get_events(api: Api) -> Response:
    return stream(api, api.query(models.EventsQuery).timeout)


def node_state(node: RaftNode[kv.KVStore]) -> models.NodeState:
    """What the dashboard draws of one member."""
    core = node.core
    log = core.log
    leader = node.leader
    return models.NodeState(
        id=node.config.id,
        role=core.role,
        term=core.term,
        vote=core.vote,
        leader=leader[0] if leader else None,
        commit=log.committed,
        applied=node.machine.applied_index,
        last_index=log.last_index,
        last_term=log.last_term,
        snapshot_index=log.snapshot_index,
        log=[
            models.LogEntryInfo(index=e.index, term=e.term, kind="membership" if e.kind else "normal")
            for e in log.entries[-LOG_TAIL:]
        ],
        members=[models.Member.model_validate(member) for member in node.members()],
    )


def election_steps(before: models.NodeState, after: models.NodeState) -> list[models.ElectionStep]:
    """The steps of an election that tell ``before`` from ``after`` (states of the same node)."""
    steps = []
    role, term = after.role, after.term
    if role in CAMPAIGNING and (role != before.role or term != before.term):
        steps.append(models.ElectionStep(step=CAMPAIGNING[role], term=term, candidate=None, leader=None))
    elif role is Role.LEADER and term != before.term:  # the whole campaign fell between two states
        steps.append(models.ElectionStep(step="campaign", term=term, candidate=None, leader=None))
    if after.vote is not None and (after.vote, term) != (before.vote, before.term):
        steps.append(models.ElectionStep(step="voted", term=term, candidate=after.vote, leader=None))
    if role != before.role and role is Role.LEADER:
        steps.append(models.ElectionStep(step="leader", term=term, candidate=None, leader=after.id))
    if role != before.role and role is Role.FOLLOWER:
        steps.append(models.ElectionStep(step="follower", term=term, candidate=None, leader=after.leader))
    return steps


def sse(event: str, data: BaseModel) -> bytes:
    return f"event: {event}\ndata: {data.model_dump_json()}\n\n".encode()


def stream(api: Api, timeout: float | None) -> Response:
    """The event stream of this node until the client goes, after ``timeout`` seconds if given, or when the
    node begins to shut down."""
    node = api.node

    async def body() -> AsyncIterator[bytes]:
        state = node_state(node)
        yield sse("state", state)
        counted = node.traffic.totals.copy()
        now = trio.current_time()
        until = math.inf if timeout is None else now + timeout
        next_traffic, quiet_until = now + TRAFFIC_INTERVAL, now + KEEP_ALIVE
        while not api.closing.is_set() and trio.current_time() < until:
            with api.until_closing(), trio.move_on_at(min(next_traffic, quiet_until, until)):
                await node.changed()
                await trio.sleep(MIN_INTERVAL)  # gathers the changes of this interval into one event
            if api.closing.is_set() or trio.current_time() >= until:
                return
            chunk = b""
            if (latest := node_state(node)) != state:
                chunk += b"".join(sse("election", step) for step in election_steps(state, latest))
                chunk += sse("state", latest)
                state = latest
            if trio.current_time() >= next_traffic:
                chunk += traffic_event(node, counted)
                counted = node.traffic.totals.copy()
                next_traffic = trio.current_time() + TRAFFIC_INTERVAL
            if not chunk and trio.current_time() >= quiet_until:
                chunk = b": keep-alive\n\n"
            if chunk:
                quiet_until = trio.current_time() + KEEP_ALIVE
                yield chunk

    response = Response(body(), content_type=SSE_TYPE)
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None  # a stream lasts as long as the client keeps it
    return response


def traffic_event(node: RaftNode[kv.KVStore], counted: Counter[TrafficKey]) -> bytes:
    """The peer messages counted since ``counted``, as a ``traffic`` event (nothing if there were none)."""
    new = node.traffic.since(counted)
    if not new:
        return b""
    counts = [
        models.TrafficCount(direction=direction, peer=peer, kind=kind, count=count)
        for (direction, peer, kind), count in sorted(new.items())
    ]
    return sse("traffic", models.Traffic(seconds=TRAFFIC_INTERVAL, counts=counts))


def allow_member_origins(node: RaftNode[kv.KVStore], response: Response) -> Response:
    """Let a page served by any member read this node's ``/events`` (a cross-origin request, the
    ``Authorization`` header allowed for a node with a client token)."""
    origin = request.headers.get("Origin")
    if request.path != EVENTS_PATH or origin is None:
        return response
    origins = {origin_of(str(member["url"])) for member in node.members()}
    if origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Headers"] = "Authorization"
        response.headers["Vary"] = "Origin"
    return response


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url``, as a browser names the origin of a page."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
