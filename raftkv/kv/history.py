"""The watch history: the latest change events, one per key changed, kept as part of the replicated state.

It is in every snapshot, so a node restored from one answers a watch exactly as a node that applied the log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from raftkv.kv.jsontext import JSONValue

DEFAULT_HISTORY_CAPACITY: Final = 10_000
"""How many events are kept; the oldest is dropped first.

A watcher that falls further behind gets ``Compacted`` and starts again from a read of the keys. Ten thousand
events are a few seconds of writes at the busiest (long enough for a watcher to reconnect to another node)
and a few megabytes of memory and snapshot, as the idempotency table."""

EventType: TypeAlias = Literal["put", "delete"]


@dataclass(frozen=True, slots=True)
class Event:
    """A change of ``key`` at store ``revision``: a put of ``value``, or a delete (``value`` None).

    The events of one transaction or lease revoke share its revision, in the order of its changes."""

    revision: int
    type: EventType
    key: str
    value: JSONValue = None

    @property
    def mod_revision(self) -> int:
        """The key's ``mod_revision`` after the change; a change always sets it to the event's revision."""
        return self.revision


class Compacted(LookupError):
    """Events after the revision asked for may have been dropped; those after ``compact_revision`` are kept."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"history compacted up to revision {compact_revision}")
        self.compact_revision = compact_revision


class History:
    def __init__(self, capacity: int = DEFAULT_HISTORY_CAPACITY, compact_revision: int = 0) -> None:
        """At most ``capacity`` events; ``compact_revision`` is the revision of the newest dropped (0: none)."""
        if capacity < 1:
            raise ValueError("history capacity must be at least 1")
        self._events: deque[Event] = deque(maxlen=capacity)
        self.compact_revision = compact_revision

    @property
    def capacity(self) -> int:
        capacity = self._events.maxlen
        assert capacity is not None
        return capacity

    def __len__(self) -> int:
        return len(self._events)

    def record(self, event: Event) -> None:
        """Add ``event`` (of a revision at least that of the newest), dropping the oldest over ``capacity``."""
        if len(self._events) == self._events.maxlen:
            self.compact_revision = self._events[0].revision
        self._events.append(event)

    def events_after(self, revision: int, key: str | None, prefix: str | None) -> list[Event]:
        """The events of revisions above ``revision``, oldest first, of ``key`` and under ``prefix`` when given.

        Raises ``Compacted`` when ``revision`` is below the compact revision: an event it asks for may be gone.
        """
        if revision < 0:
            raise ValueError("revision must not be negative")
        if revision < self.compact_revision:
            raise Compacted(self.compact_revision)
        newer: list[Event] = []
        for event in reversed(self._events):  # watchers ask for recent events: from the newest back
            if event.revision <= revision:
                break
            if (key is None or event.key == key) and (prefix is None or event.key.startswith(prefix)):
                newer.append(event)
        newer.reverse()
        return newer

    def events(self) -> list[Event]:
        """The events, oldest first; they are immutable, so this copy is a snapshot capture."""
        return list(self._events)
