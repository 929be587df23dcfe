"""Following ``GET /watch`` across members, free of I/O: the synchronous and the Trio client feed a
``WatchSession`` the lines of each stream they open and hand its changes to the caller.

A stream that drops (a member killed, shutting down, cut off) is opened again on another member, after the
last change delivered: every member serves a watch from its own applied history in revision order, so the
caller gets each change once, in order, whichever members serve it. The changes of one transaction share a
revision; to lose none of them when a stream drops halfway through one, a session resumes before that
revision and skips the changes of it it has delivered already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from raftkv.client import calls
from raftkv.client.calls import Call
from raftkv.client.errors import Compacted

KEEP_ALIVE: Final = 15.0  # a member sends a comment line on a stream idle this many seconds (the spec)


@dataclass(frozen=True)
class ServerSentEvent:
    id: str | None
    event: str
    data: str


@dataclass
class ServerSentEvents:
    """The events of a ``text/event-stream``, line by line: ``id:``, ``event:`` and ``data:`` fields; a blank
    line ends an event; a line starting with ``:`` is a comment (the keep-alive)."""

    _id: str | None = None
    _event: str = "message"
    _data: list[str] = field(default_factory=list)

    def line(self, line: str) -> ServerSentEvent | None:
        """The event ``line`` completes, if it does."""
        if not line:
            event = ServerSentEvent(self._id, self._event, "\n".join(self._data)) if self._data else None
            self._id, self._event, self._data = None, "message", []
            return event
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # a comment, or a field raftkv does not send (retry)


class WatchSession:
    """The changes under ``prefix`` after revision ``after_revision``, over as many streams as it takes."""

    def __init__(self, prefix: str, after_revision: int) -> None:
        self.prefix = prefix
        self.last = after_revision  # the revision of the last change delivered
        self._delivered_at_last = 0  # how many changes of revision ``last`` were delivered
        self._skip = 0  # how many of those the current stream sends again
        self._events = ServerSentEvents()

    def call(self) -> Call[httpx.Response]:
        """The call that opens the next stream."""
        self._events = ServerSentEvents()
        self._skip = self._delivered_at_last
        after = self.last - 1 if self._delivered_at_last else self.last
        return calls.watch(self.prefix, after, KEEP_ALIVE)

    def line(self, line: str) -> dict[str, Any] | None:
        """The change (a WatchEvent) that ``line`` completes, unless it was delivered before. Raises
        Compacted when the stream fell behind the history."""
        event = self._events.line(line)
        if event is None:
            return None
        if event.event == "compacted":
            raise Compacted(410, json.loads(event.data))
        revision = int(event.id or 0)
        if revision == self.last and self._skip:
            self._skip -= 1
            return None
        if revision == self.last:
            self._delivered_at_last += 1
        else:
            self.last, self._delivered_at_last = revision, 1
        change: dict[str, Any] = json.loads(event.data)
        return change


def member_of(stream: httpx.Response) -> str:
    """The member a stream came from, as the client's endpoints name it."""
    return str(stream.request.url.copy_with(query=None)).removesuffix("/watch")
