"""The snapshot of a store: a cheap capture of the state, written frame by frame, and read back strictly.

A snapshot is ``PREFIX`` (magic and format number) and then frames (see ``raftkv.kv.frames``):

1. the header, an object: the applied index, the store revision, the settings (idempotency capacity and
   window, history capacity), the compact revision, and the counts of the rows that follow;
2. the leases by id, as columns [ids, ttls];
3. the keys in order, as columns [keys, values, create, mod, version, lease] (lease 0: none);
4. the idempotency table, oldest first, as columns [idempotency keys, fingerprints, indices, outcomes];
5. the event history, oldest first, as columns [revisions, types, keys, values] (a delete's value is null);

then the end of the data. Values stay JSON, which holds whatever a command can carry, and a whole frame parses
in one call. Every part is in a fixed order (leases by id, keys in order, the rest by apply order), so
equal states write equal bytes.

The capture shares the table's chunks (frozen: the store copies a chunk before changing it) and the lease
ttls (the next grant or revoke copies them), and copies the idempotency table and the history (lists of
references to immutable entries): its cost grows with neither the keys nor the leases, only with those two
bounded tables.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from raftkv.kv.codec import FINGERPRINT_DIGITS, MAX_VALUE_NESTING
from raftkv.kv.commands import MAX_LEASE_TTL
from raftkv.kv.forms import is_count, is_lease, outcome, outcome_form
from raftkv.kv.frames import (
    Rows,
    SnapshotDecodeError,
    read_exact,
    read_frame,
    read_rows,
    write_frame,
    write_rows,
)
from raftkv.kv.history import Event, History
from raftkv.kv.idempotency import IdempotencyTable, Remembered
from raftkv.kv.jsontext import dump_json
from raftkv.kv.leases import Leases
from raftkv.kv.state import State
from raftkv.kv.table import NO_LEASE, Chunk, SortedTable
from raftkv.machine import SnapshotWriter

PREFIX: Final = b"RKVS" + (3).to_bytes(4, "big")  # format 1 was one JSON object; 2 had no leases or history
# A value lies at most five levels into a frame: frame, outcomes column, outcome of a transaction, its
# results, a key-value among them.
_NESTING: Final = MAX_VALUE_NESTING + 5


@dataclass(frozen=True, slots=True)
class _Header:
    applied_index: int
    revision: int
    idempotency_capacity: int
    idempotency_window: int
    history_capacity: int
    compact_revision: int
    leases: int
    keys: int
    idempotency: int
    events: int

    @classmethod
    def of(cls, state: State) -> _Header:
        return cls(
            state.applied_index,
            state.revision,
            state.idempotency.capacity,
            state.idempotency.window,
            state.history.capacity,
            state.history.compact_revision,
            len(state.leases),
            len(state.table),
            len(state.idempotency),
            len(state.history),
        )

    @classmethod
    def from_json(cls, item: Any) -> _Header:
        fields = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(item, dict) or list(item) != fields or not all(map(is_count, item.values())):
            raise SnapshotDecodeError(f"bad snapshot header: {item!r:.200}")
        header = cls(**item)
        if min(header.idempotency_capacity, header.idempotency_window, header.history_capacity) < 1:
            raise SnapshotDecodeError("a capacity or window below 1")
        if header.idempotency > header.idempotency_capacity or header.events > header.history_capacity:
            raise SnapshotDecodeError("idempotency table or history exceeds its capacity")
        if header.compact_revision > header.revision:
            raise SnapshotDecodeError("compact revision after the store revision")
        return header


def capture(state: State) -> SnapshotWriter:
    """Capture ``state`` now and return the writer of its snapshot; later changes to ``state`` do not show."""
    header = _Header.of(state)
    ttls = state.leases.ttls()
    chunks = state.table.freeze()
    idempotency = state.idempotency.entries()
    events = state.history.events()

    def write(out: BinaryIO) -> None:
        out.write(PREFIX)
        write_frame(out, dump_json(dataclasses.asdict(header), "strict"))
        leases = sorted(ttls.items())
        write_rows(out, [(lease for lease, _ in leases), (ttl for _, ttl in leases)])
        columns = zip(*(chunk.columns() for chunk in chunks), strict=True)  # nothing if no chunks
        write_rows(out, [itertools.chain.from_iterable(column) for column in columns])
        write_rows(out, _idempotency_columns(idempotency))
        write_rows(out, _event_columns(events))

    return write


def _idempotency_columns(entries: list[tuple[str, Remembered]]) -> list[Iterator[Any]]:
    return [
        (key for key, _ in entries),
        (remembered.fingerprint for _, remembered in entries),
        (remembered.index for _, remembered in entries),
        (outcome_form(remembered.outcome) for _, remembered in entries),
    ]


def _event_columns(events: list[Event]) -> list[Iterator[Any]]:
    return [
        (event.revision for event in events),
        (event.type for event in events),
        (event.key for event in events),
        (event.value for event in events),
    ]


def read(data: BinaryIO) -> State:
    """The state a snapshot was written of, read frame by frame (raises SnapshotDecodeError on anything else)."""
    if read_exact(data, len(PREFIX)) != PREFIX:
        raise SnapshotDecodeError("not a snapshot of this format")
    header = _Header.from_json(read_frame(data, _NESTING))
    leases = Leases(_read_leases(data, header))
    table = _read_keys(data, header, leases)
    idempotency = _read_idempotency(data, header)
    history = _read_history(data, header)
    if data.read(1):
        raise SnapshotDecodeError("data after the end of the snapshot")
    return State(idempotency, history, table, leases, header.revision, header.applied_index)


def _all_of_type(items: list[Any], kind: type) -> bool:
    return set(map(type, items)) <= {kind}


def _ascending(items: list[Any], after: Any, strictly: bool = True) -> bool:
    order = operator.lt if strictly else operator.le
    return all(map(order, itertools.chain((after,), items), items))


def _read_leases(data: BinaryIO, header: _Header) -> dict[int, int]:
    ttls: dict[int, int] = {}
    last_id = 0
    for ids, lease_ttls in read_rows(data, _NESTING, header.leases, 2):
        if not (all(map(is_lease, ids)) and _ascending(ids, last_id)):
            raise SnapshotDecodeError("lease ids are not ascending 63-bit positive integers")
        if not all(type(ttl) is int and 1 <= ttl <= MAX_LEASE_TTL for ttl in lease_ttls):
            raise SnapshotDecodeError("lease ttls out of range")
        last_id = ids[-1]
        ttls.update(zip(ids, lease_ttls, strict=True))
    return ttls


def _read_keys(data: BinaryIO, header: _Header, leases: Leases) -> SortedTable:
    """The table, its keys attached to their ``leases`` as they are read."""
    table = SortedTable()
    for rows in read_rows(data, _NESTING, header.keys, 6):
        run = _key_run(rows, table.last_key(), header.revision, leases)
        table.append(run)
        leases.attach(zip(itertools.compress(run.keys, run.lease), filter(None, run.lease), strict=True))
    return table


def _key_run(rows: Rows, after: str, revision: int, leases: Leases) -> Chunk:
    """A frame of keys, checked: string keys ascending from above ``after``, revisions in 1..``revision``,
    leases among those granted."""
    keys, values, create, mod, version, lease = rows
    if not _all_of_type(keys, str) or not _ascending(keys, after):
        raise SnapshotDecodeError("snapshot keys are not strings in strictly ascending order")
    if not all(_all_of_type(column, int) for column in (create, mod, version, lease)):
        raise SnapshotDecodeError("snapshot revisions or leases are not integers")
    if min(create) < 1 or max(mod) > revision or min(version) < 1 or not all(map(operator.le, create, mod)):
        raise SnapshotDecodeError("snapshot revisions out of order or range")
    if not all(id_ in leases for id_ in set(lease) - {NO_LEASE}):
        raise SnapshotDecodeError("a key on a lease not granted")
    if not _is_utf8("".join(keys)):
        raise SnapshotDecodeError("a key with a lone surrogate")
    try:
        return Chunk(
            0, keys, values, array("q", create), array("q", mod), array("q", version), array("q", lease)
        )
    except OverflowError as error:
        raise SnapshotDecodeError(f"bad key frame: {error}") from None


def _is_utf8(text: str) -> bool:
    """Whether ``text`` has no lone surrogate, as commands check keys."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_idempotency(data: BinaryIO, header: _Header) -> IdempotencyTable:
    entries: dict[str, Remembered] = {}
    last_index = max(0, header.applied_index - header.idempotency_window - 1)  # anything older is forgotten
    for keys, fingerprints, indices, outcomes in read_rows(data, _NESTING, header.idempotency, 4):
        if not _all_of_type(keys, str) or not all(keys) or not all(map(_is_fingerprint, fingerprints)):
            raise SnapshotDecodeError("bad idempotency keys or fingerprints")
        if (
            not all(map(is_count, indices))
            or not _ascending(indices, last_index)
            or indices[-1] > header.applied_index
        ):
            raise SnapshotDecodeError("idempotency indices out of order or range")
        last_index = indices[-1]
        entries.update(
            (key, Remembered(fingerprint, index, outcome(form)))
            for key, fingerprint, index, form in zip(keys, fingerprints, indices, outcomes, strict=True)
        )
    if len(entries) != header.idempotency:
        raise SnapshotDecodeError("idempotency keys repeated")
    return IdempotencyTable(header.idempotency_capacity, header.idempotency_window, entries.items())


def _is_fingerprint(item: object) -> bool:
    return isinstance(item, str) and len(item) == FINGERPRINT_DIGITS and set(item) <= set("0123456789abcdef")


def _read_history(data: BinaryIO, header: _Header) -> History:
    history = History(header.history_capacity, header.compact_revision)
    last_revision = max(1, header.compact_revision)
    for revisions, types, keys, values in read_rows(data, _NESTING, header.events, 4):
        if not all(map(is_count, revisions)) or not _ascending(revisions, last_revision, strictly=False):
            raise SnapshotDecodeError("event revisions out of order")
        if revisions[-1] > header.revision:
            raise SnapshotDecodeError("an event after the store revision")
        if not _all_of_type(keys, str) or not all(keys) or not _is_utf8("".join(keys)):
            raise SnapshotDecodeError("event keys are not strings")
        last_revision = revisions[-1]
        for revision, kind, key, value in zip(revisions, types, keys, values, strict=True):
            if kind not in ("put", "delete") or (kind == "delete" and value is not None):
                raise SnapshotDecodeError(f"bad event: {kind!r:.20} of {value!r:.20}")
            history.record(Event(revision, kind, key, value))
    return history
