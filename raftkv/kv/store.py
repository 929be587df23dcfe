"""``KVStore``: the state machine a node replicates, as ``raftkv.machine.StateMachine`` asks for."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import BinaryIO

from raftkv.kv import snapshot
from raftkv.kv.codec import CommandDecodeError, decode_command, fingerprint
from raftkv.kv.execute import execute
from raftkv.kv.history import DEFAULT_HISTORY_CAPACITY, Event, History
from raftkv.kv.idempotency import (
    DEFAULT_IDEMPOTENCY_CAPACITY,
    DEFAULT_IDEMPOTENCY_WINDOW,
    IdempotencyTable,
    Remembered,
)
from raftkv.kv.results import IdempotencyConflict, InvalidCommand, KeyValue, Replayed, Result
from raftkv.kv.state import State
from raftkv.machine import SnapshotWriter


class ApplyOrderError(ValueError):
    """An entry applied out of order: applying twice or skipping one would make this replica diverge."""


@dataclass(frozen=True, slots=True)
class Page:
    """Keys of one page of a listing; ``next`` is the ``start_after`` of the next page (None: this is the last)."""

    items: list[KeyValue]
    next: str | None


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None if there is none), so that a
    prefix scan is one bisected slice of the sorted keys."""
    stem = prefix.rstrip(chr(sys.maxunicode))
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


class KVStore:
    """The key-value state every replica builds by applying the committed log in order.

    Like etcd, a global ``revision`` counts the commands that changed keys; each key records the revision that
    created it and the one that last changed it; leases hold keys until they are revoked; and the latest
    changes are kept as events for watchers.

    A write that carries an idempotency key is done once: ``apply`` remembers its outcome with the command's
    fingerprint, and a later command under the same key returns ``Replayed(first outcome)`` if it is the
    same command, ``IdempotencyConflict`` if not, changing nothing either way.
    """

    def __init__(
        self,
        idempotency_capacity: int = DEFAULT_IDEMPOTENCY_CAPACITY,
        idempotency_window: int = DEFAULT_IDEMPOTENCY_WINDOW,
        history_capacity: int = DEFAULT_HISTORY_CAPACITY,
    ) -> None:
        self._state = State(
            IdempotencyTable(idempotency_capacity, idempotency_window), History(history_capacity)
        )

    @property
    def revision(self) -> int:
        """The number of commands so far that changed keys (etcd's store revision)."""
        return self._state.revision

    @property
    def applied_index(self) -> int:
        """The index of the last log entry applied (or covered by the snapshot restored)."""
        return self._state.applied_index

    @property
    def idempotency_capacity(self) -> int:
        return self._state.idempotency.capacity

    @property
    def idempotency_window(self) -> int:
        return self._state.idempotency.window

    @property
    def history_capacity(self) -> int:
        return self._state.history.capacity

    @property
    def compact_revision(self) -> int:
        """The revision of the newest event dropped from the history (0: none yet)."""
        return self._state.history.compact_revision

    def apply(self, index: int, data: bytes | None) -> Result | None:
        """Apply the committed entry at ``index``, which must directly follow ``applied_index``.

        ``data`` None is the no-op a new leader commits: it returns None and only advances ``applied_index``
        (and, as every entry does, ages the idempotency table). Undecodable data returns ``InvalidCommand``.
        """
        state = self._state
        if index != state.applied_index + 1:
            raise ApplyOrderError(f"entry {index} applied after entry {state.applied_index}")
        state.applied_index = index
        state.idempotency.age(index)
        if data is None:
            return None
        try:
            command = decode_command(data)
        except CommandDecodeError as error:
            return InvalidCommand(str(error), state.revision)
        if command.idempotency_key is None:
            return execute(state, command)
        digest = fingerprint(command)
        first = state.idempotency.get(command.idempotency_key)
        if first is not None:
            if first.fingerprint == digest:
                return Replayed(first.outcome)
            return IdempotencyConflict(command.idempotency_key, state.revision)
        outcome = execute(state, command)
        state.idempotency.remember(command.idempotency_key, Remembered(digest, index, outcome))
        return outcome

    def get(self, key: str) -> KeyValue | None:
        return self._state.table.get(key)

    def range(
        self, prefix: str = "", limit: int | None = None, *, start_after: str | None = None
    ) -> list[KeyValue]:
        """Keys starting with ``prefix`` (and above ``start_after``, when given), in key order (code point
        order, which is also UTF-8 byte order); at most ``limit`` of them (None: all)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        low = prefix if start_after is None else max(prefix, start_after + "\0")  # "\0": the least successor
        return self._state.table.range(low, _after_prefix(prefix), limit)

    def page(self, prefix: str = "", limit: int = 100, start_after: str | None = None) -> Page:
        """One page of ``range``: at most ``limit`` (at least 1) keys, and where the next page starts."""
        if limit < 1:
            raise ValueError("a page holds at least one key")
        items = self.range(prefix, limit + 1, start_after=start_after)
        if len(items) <= limit:
            return Page(items, None)
        del items[limit:]
        return Page(items, items[-1].key)

    def leases(self) -> list[tuple[int, int]]:
        """Every lease granted and not revoked, as (id, ttl in seconds), by id: what the lease keeper times."""
        return self._state.leases.all()

    @property
    def lease_version(self) -> int:
        """Moves whenever a lease is granted or revoked in this store object: a lease keeper compares it
        (with the store's identity, which a restore from a snapshot changes) to know when to look again."""
        return self._state.leases.version

    def lease(self, lease: int) -> tuple[int, list[str]] | None:
        """The ttl of ``lease`` and its keys in order (None: no such lease)."""
        return self._state.leases.lease(lease)

    def events_after(
        self, revision: int, *, key: str | None = None, prefix: str | None = None
    ) -> list[Event]:
        """The changes after store revision ``revision``, in revision order (a transaction's in op order),
        only those of ``key`` and under ``prefix`` when given.

        Raises ``Compacted`` (carrying the compact revision) when events after ``revision`` may have been
        dropped from the history; a watcher then starts again from a read of the keys.
        """
        return self._state.history.events_after(revision, key, prefix)

    def snapshot(self) -> SnapshotWriter:
        """Capture the state now, cheaply, and return the writer of its snapshot (``raftkv.kv.snapshot``)."""
        return snapshot.capture(self._state)

    def restore(self, data: BinaryIO) -> None:
        """Become the store a snapshot was written of, reading it frame by frame, with its settings; it then
        applies the entries after its ``applied_index``. Raises SnapshotDecodeError, changing nothing, on
        anything else."""
        self._state = snapshot.read(data)
