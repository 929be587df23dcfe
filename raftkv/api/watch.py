"""Watching keys: a long-poll on one key and a server-sent-event stream on a prefix, both served from the store's
bounded history of changes as this node applies them.

Both follow this node's applied state, which only moves forward, and hand out only events of revisions above
the one the client names: whatever node serves a client that resumes with the revision of the last event it
saw, it gets each later change once, in order, and never one from before (a node that is behind simply has
nothing to send until it catches up). A revision older than the history is a 410 with the compact revision:
the client reads the keys again and watches from the revision of that read.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Final

import trio
from quart import Response

from raftkv import kv
from raftkv.api import models
from raftkv.api.context import Api
from raftkv.api.errors import Answer, error_response
from raftkv.node import RaftNode

KEEP_ALIVE: Final = 15.0  # seconds between comment lines on an idle stream, so proxies keep it open
SSE_TYPE: Final = "text/event-stream"

Select = Callable[[kv.KVStore, int], list[kv.Event]]
"""The events of interest after a revision (raises kv.Compacted)."""


def compacted(error: kv.Compacted) -> Answer:
    message = f"{error}; read the keys, then watch from the revision of that read"
    return Answer(error_response(410, message, compact_revision=error.compact_revision))


def event_model(event: kv.Event) -> models.WatchEvent:
    return models.WatchEvent(type=event.type, key=event.key, value=event.value, revision=event.revision)


async def next_events(node: RaftNode[kv.KVStore], after: int, select: Select) -> list[kv.Event]:
    """The first events after revision ``after`` that ``select`` picks, waiting for the node to apply them.
    Raises kv.Compacted."""
    while not (events := select(node.machine, after)):
        await node.next_apply()
    return events


async def long_poll(api: Api, key: str, after: int | None, timeout: float) -> Response:
    """The first change of ``key`` after ``after`` (default: the revision applied now), or 204 after
    ``timeout`` seconds without one (or when the node begins to shut down)."""
    node = api.node
    revision = node.machine.revision if after is None else after
    events: list[kv.Event] = []
    with api.until_closing(), trio.move_on_after(timeout):
        try:
            events = await next_events(node, revision, lambda store, r: store.events_after(r, key=key))
        except kv.Compacted as e:
            raise compacted(e) from None
    if not events:
        return Response(b"", status=204)
    return Response(event_model(events[0]).model_dump_json(), content_type="application/json")


def stream(api: Api, prefix: str, after: int | None, timeout: float | None) -> Response:
    """Every change under ``prefix`` after ``after`` (default: the revision applied now), as server-sent
    events; 410 at once if that is already older than the history. The stream ends when the client goes, when
    it falls behind the history (``event: compacted``), after ``timeout`` seconds if given, or when the node
    begins to shut down."""
    node = api.node
    revision = node.machine.revision if after is None else after

    def select(store: kv.KVStore, after: int) -> list[kv.Event]:
        return store.events_after(after, prefix=prefix)

    try:
        select(node.machine, revision)
    except kv.Compacted as e:
        raise compacted(e) from None

    async def body() -> AsyncIterator[bytes]:
        seen = revision
        until = math.inf if timeout is None else trio.current_time() + timeout
        while not api.closing.is_set() and trio.current_time() < until:
            batch: list[kv.Event] = []
            try:
                with api.until_closing(), trio.move_on_at(min(until, trio.current_time() + KEEP_ALIVE)):
                    batch = await next_events(node, seen, select)
            except kv.Compacted as e:
                end = models.CompactedError(error=str(e), compact_revision=e.compact_revision)
                yield f"event: compacted\ndata: {end.model_dump_json()}\n\n".encode()
                return
            if batch:
                seen = batch[-1].revision
                yield b"".join(sse(event_model(event).model_dump_json(), event.revision) for event in batch)
            elif not api.closing.is_set() and trio.current_time() < until:
                yield b": keep-alive\n\n"

    response = Response(body(), content_type=SSE_TYPE)
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None  # a stream lasts as long as the client keeps it
    return response


def sse(data: str, event_id: int) -> bytes:
    """One server-sent event; its id is the revision, so a reconnecting client's Last-Event-ID resumes it."""
    return f"id: {event_id}\ndata: {data}\n\n".encode()
