"""The keys in order with their state: a chunked sorted table whose chunks a snapshot capture shares."""

from __future__ import annotations

import bisect
from array import array
from typing import Final, TypeAlias

from raftkv.kv.jsontext import JSONValue
from raftkv.kv.results import KeyValue

CHUNK_KEYS: Final = 1000
"""Keys per chunk of the sorted table; a chunk splits above twice this and merges with a neighbour at half.

A new key shifts the references of one chunk, not those of every greater key in the store, and a capture
shares the chunks instead of copying them."""

NO_LEASE: Final = 0
"""The lease column's value for a key on no lease (lease ids are positive)."""

Columns: TypeAlias = "tuple[list[str], list[JSONValue], array[int], array[int], array[int], array[int]]"


class Chunk:
    """A run of consecutive keys with their state, column by column; revisions and lease ids are machine
    integers in arrays (8 bytes each) rather than int objects. ``epoch`` is the table's epoch when this chunk
    was made."""

    __slots__ = ("create", "epoch", "keys", "lease", "mod", "values", "version")

    def __init__(
        self,
        epoch: int,
        keys: list[str],
        values: list[JSONValue],
        create: array[int],
        mod: array[int],
        version: array[int],
        lease: array[int],
    ) -> None:
        self.epoch, self.keys, self.values = epoch, keys, values
        self.create, self.mod, self.version, self.lease = create, mod, version, lease

    @classmethod
    def empty(cls, epoch: int) -> Chunk:
        return cls(epoch, [], [], array("q"), array("q"), array("q"), array("q"))

    def copy(self, epoch: int) -> Chunk:
        return self.slice(0, len(self.keys), epoch)

    def columns(self) -> Columns:
        return self.keys, self.values, self.create, self.mod, self.version, self.lease

    def key_value(self, i: int) -> KeyValue:
        return KeyValue(
            self.keys[i], self.values[i], self.create[i], self.mod[i], self.version[i], self.lease[i] or None
        )

    def key_values(self, start: int, end: int) -> list[KeyValue]:
        return list(
            map(
                KeyValue,
                self.keys[start:end],
                self.values[start:end],
                self.create[start:end],
                self.mod[start:end],
                self.version[start:end],
                [lease or None for lease in self.lease[start:end]],
            )
        )

    def insert(self, i: int, key: str, value: JSONValue, revision: int, lease: int) -> None:
        self.keys.insert(i, key)
        self.values.insert(i, value)
        self.create.insert(i, revision)
        self.mod.insert(i, revision)
        self.version.insert(i, 1)
        self.lease.insert(i, lease)

    def update(self, i: int, value: JSONValue, revision: int, lease: int) -> None:
        self.values[i] = value
        self.mod[i] = revision
        self.version[i] += 1
        self.lease[i] = lease

    def delete(self, i: int) -> None:
        del self.keys[i], self.values[i], self.create[i], self.mod[i], self.version[i], self.lease[i]

    def extend(self, other: Chunk) -> None:
        self.keys += other.keys
        self.values += other.values
        self.create += other.create
        self.mod += other.mod
        self.version += other.version
        self.lease += other.lease

    def slice(self, start: int, end: int, epoch: int) -> Chunk:
        return Chunk(
            epoch,
            self.keys[start:end],
            self.values[start:end],
            self.create[start:end],
            self.mod[start:end],
            self.version[start:end],
            self.lease[start:end],
        )

    def split_off(self, at: int, epoch: int) -> Chunk:
        """Move the keys from ``at`` on into a new chunk, and return it."""
        tail = self.slice(at, len(self.keys), epoch)
        for column in self.columns():
            del column[at:]
        return tail


class SortedTable:
    """The keys in order with their state, in chunks that a capture shares.

    ``freeze`` returns the chunks as they are and starts a new epoch; a chunk from an older epoch may be held
    by a capture, so it is copied before it is changed (copy on write), and a capture never sees later writes.
    """

    def __init__(self) -> None:
        self._chunks: list[Chunk] = []  # none empty
        self._maxes: list[str] = []  # the last key of each chunk, to find a key's chunk by bisection
        self._epoch = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: str) -> KeyValue | None:
        ci = bisect.bisect_left(self._maxes, key)
        if ci == len(self._maxes):
            return None
        chunk = self._chunks[ci]
        i = bisect.bisect_left(chunk.keys, key)
        return chunk.key_value(i) if chunk.keys[i] == key else None

    def range(self, low: str, high: str | None, limit: int | None) -> list[KeyValue]:
        """The keys in [low, high) in order (high None: no upper bound), at most ``limit`` (None: all)."""
        found: list[KeyValue] = []
        ci = bisect.bisect_left(self._maxes, low)
        start = bisect.bisect_left(self._chunks[ci].keys, low) if ci < len(self._chunks) else 0
        while ci < len(self._chunks) and (limit is None or len(found) < limit):
            keys = self._chunks[ci].keys
            end = len(keys) if high is None else bisect.bisect_left(keys, high, start)
            if limit is not None:
                end = min(end, start + limit - len(found))
            found += self._chunks[ci].key_values(start, end)
            if end < len(keys):
                break
            ci, start = ci + 1, 0
        return found

    def put(self, key: str, value: JSONValue, revision: int, lease: int) -> KeyValue:
        """Set ``key`` to ``value`` at ``revision`` on ``lease`` (``NO_LEASE``: none), and return its new state:
        a new key starts at version 1, an old one counts up."""
        if not self._chunks:
            self._chunks.append(Chunk.empty(self._epoch))
            self._maxes.append(key)
        ci = min(bisect.bisect_left(self._maxes, key), len(self._chunks) - 1)
        chunk = self._writable(ci)
        i = bisect.bisect_left(chunk.keys, key)
        if i < len(chunk.keys) and chunk.keys[i] == key:
            chunk.update(i, value, revision, lease)
            return chunk.key_value(i)
        chunk.insert(i, key, value, revision, lease)
        written = chunk.key_value(i)
        self._count += 1
        self._maxes[ci] = chunk.keys[-1]
        self._split_if_big(ci)
        return written

    def delete(self, key: str) -> None:
        """Remove ``key``, which must be present."""
        ci = bisect.bisect_left(self._maxes, key)
        chunk = self._writable(ci)
        chunk.delete(bisect.bisect_left(chunk.keys, key))
        self._count -= 1
        if len(self._chunks) > 1 and len(chunk.keys) <= CHUNK_KEYS // 2:
            self._merge(ci)
        elif chunk.keys:
            self._maxes[ci] = chunk.keys[-1]
        else:
            self._chunks.clear()
            self._maxes.clear()

    def append(self, run: Chunk) -> None:
        """Add a run of keys above all present ones (restore's way in), in chunks of ``CHUNK_KEYS``."""
        for start in range(0, len(run.keys), CHUNK_KEYS):
            chunk = run.slice(start, start + CHUNK_KEYS, self._epoch)
            self._chunks.append(chunk)
            self._maxes.append(chunk.keys[-1])
        self._count += len(run.keys)

    def last_key(self) -> str:
        """The greatest key, or "" (which is below every key) if there are none."""
        return self._maxes[-1] if self._maxes else ""

    def freeze(self) -> tuple[Chunk, ...]:
        """The chunks as they are now; later writes leave them alone."""
        self._epoch += 1
        return tuple(self._chunks)

    def _writable(self, ci: int) -> Chunk:
        chunk = self._chunks[ci]
        if chunk.epoch != self._epoch:
            chunk = self._chunks[ci] = chunk.copy(self._epoch)
        return chunk

    def _split_if_big(self, ci: int) -> None:
        chunk = self._chunks[ci]
        if len(chunk.keys) > 2 * CHUNK_KEYS:
            tail = chunk.split_off(CHUNK_KEYS, self._epoch)
            self._chunks.insert(ci + 1, tail)
            self._maxes[ci : ci + 1] = [chunk.keys[-1], tail.keys[-1]]

    def _merge(self, ci: int) -> None:
        """Merge the small chunk ``ci`` with a neighbour, keeping chunks few and the bisection short."""
        left = ci if ci + 1 < len(self._chunks) else ci - 1
        chunk = self._writable(left)
        chunk.extend(self._chunks.pop(left + 1))
        del self._maxes[left + 1]
        self._maxes[left] = chunk.keys[-1]
        self._split_if_big(left)
