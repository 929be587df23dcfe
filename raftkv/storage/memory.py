"""Storage kept in memory, for the deterministic simulator: a "crash" is dropping the node, not the storage."""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from raftkv.machine import SnapshotWriter
from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot
from raftkv.storage.errors import StorageCorruptError
from raftkv.storage.log_state import LogState


class MemoryStorage:
    """Every save is durable the moment it returns, which is what a simulated crash between steps needs.

    Only immutable values are kept (frozen entries, copied into a private list; ``load`` hands out tuples),
    so a restarted node can never see changes its previous incarnation made to its own objects. Snapshot data
    is kept by (index, term), like the files of ``FileStorage``.
    """

    def __init__(self) -> None:
        self._state = LogState()
        self._data: dict[tuple[int, int], bytes] = {}
        self._incoming: dict[tuple[int, int], _MemoryReceiver] = {}

    def load(self) -> PersistentState:
        return self._state.persistent_state()

    def term_at(self, index: int) -> int | None:
        """The stored term of the entry at ``index`` (0 before the first entry), None if not held: for the
        simulator's checker, without a whole ``load``."""
        return 0 if index == 0 else self._state.term_at(index)

    def needs_disk(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> bool:
        return not self._state.moves_only_commit(hard_state, entries, snapshot)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        self._state.check(entries, snapshot)
        if snapshot is not None and snapshot.index > 0 and self.snapshot_data(snapshot) is None:
            raise ValueError(f"no data was written for snapshot {snapshot.index}/{snapshot.term}")
        self._state.apply(hard_state, entries, snapshot)
        if snapshot is not None:
            current = (snapshot.index, snapshot.term)
            self._data = {key: data for key, data in self._data.items() if key >= current}

    def write_snapshot(self, snapshot: Snapshot, writer: SnapshotWriter) -> None:
        out = io.BytesIO()
        writer(out)
        self.keep_snapshot_data((snapshot.index, snapshot.term), out.getvalue())

    def receive_snapshot(self, index: int, term: int, size: int, crc: int) -> _MemoryReceiver:
        key = (index, term)
        receiver = self._incoming.get(key)
        if receiver is None or (receiver.size, receiver.crc) != (size, crc):
            receiver = self._incoming[key] = _MemoryReceiver(self, key, size, crc)
        return receiver

    def snapshot_data(self, snapshot: Snapshot) -> tuple[int, int] | None:
        data = self.snapshot_data_by_key((snapshot.index, snapshot.term))
        return None if data is None else (len(data), zlib.crc32(data))

    def snapshot_data_by_key(self, key: tuple[int, int]) -> bytes | None:
        return self._data.get(key)

    def keep_snapshot_data(self, key: tuple[int, int], data: bytes) -> None:
        self._data[key] = data

    def open_snapshot(self, snapshot: Snapshot) -> BinaryIO:
        data = self._data.get((snapshot.index, snapshot.term))
        if data is None:
            raise FileNotFoundError(f"no data for snapshot {snapshot.index}/{snapshot.term}")
        return io.BytesIO(data)

    def close(self) -> None:
        """Nothing to release; the state stays so a simulated restart can ``load`` it."""


class _MemoryReceiver:
    def __init__(self, storage: MemoryStorage, key: tuple[int, int], size: int, crc: int) -> None:
        self._storage, self._key = storage, key
        self.size, self.crc = size, crc
        self._buffer = bytearray()
        self._received = False  # a flag rather than a length test, so that empty data completes too

    @property
    def offset(self) -> int:
        return len(self._buffer)

    @property
    def complete(self) -> bool:
        return len(self._buffer) == self.size and self._storage.snapshot_data_by_key(self._key) is not None

    def write(self, offset: int, chunk: bytes) -> int:
        if offset == len(self._buffer) and not self._received:
            self._buffer += chunk[: self.size - len(self._buffer)]
            if len(self._buffer) == self.size:
                self._finish()
        return len(self._buffer)

    def _finish(self) -> None:
        data = bytes(self._buffer)
        if zlib.crc32(data) != self.crc:
            self._buffer.clear()
            index, term = self._key
            raise StorageCorruptError(Path(f"snapshot-{index}-{term}"), 0, "received data fails its checksum")
        self._storage.keep_snapshot_data(self._key, data)
        self._received = True
