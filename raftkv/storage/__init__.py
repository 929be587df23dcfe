"""Durable Raft state: term, vote, commit index, log and snapshot.

``FileStorage`` is the real one (see its module for the file format and why); ``MemoryStorage`` serves the
deterministic simulator. Both follow ``Storage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol

from raftkv.machine import SnapshotWriter
from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot
from raftkv.storage.disk import Disk, OsDisk, SimulatedPowerLoss
from raftkv.storage.errors import StorageClosedError, StorageCorruptError
from raftkv.storage.file import FileStorage
from raftkv.storage.memory import MemoryStorage
from raftkv.storage.simdisk import SimulatedDisk


class SnapshotReceiver(Protocol):
    """The data of one snapshot arriving from the leader in chunks. It resumes where it stopped, after a dropped
    connection or a restart: ``offset`` says how much is held, and the sender continues from there."""

    @property
    def offset(self) -> int:
        """Bytes held so far."""

    @property
    def complete(self) -> bool:
        """Every byte arrived and matched the checksum: the data is durable, and ``save`` may now take the
        snapshot as the current one."""

    def write(self, offset: int, chunk: bytes) -> int:
        """Store ``chunk`` if it starts at ``offset`` (else ignore it) and return the offset held after it.
        Once the last byte is in, the checksum is checked (StorageCorruptError, and a fresh start, if not)."""


class Storage(Protocol):
    def load(self) -> PersistentState:
        """What survived: the snapshot, and the contiguous entries right after it (or from index 1)."""

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        """Durably, as one atomic unit, before returning: 1. ``snapshot`` replaces the stored one and
        discards entries up to its index (all of them unless the log holds its index with its term);
        2. ``entries`` replace every stored entry from ``entries[0].index`` on; 3. ``hard_state`` replaces
        the stored one. Raises ValueError, storing nothing, if the entries would leave a gap, or if the
        snapshot's data was never written or received (except at index 0, a bootstrap configuration).
        A save of a hard state that differs only in its commit index may stay in memory until the next save
        that writes (see ``needs_disk``): a crash may then bring back an older commit index, which is still
        true, and the leader tells the current one again."""

    def needs_disk(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> bool:
        """Whether ``save`` of these would wait for the disk. When not (only the commit index moves), ``save``
        returns at once and may be called without a worker thread."""

    def write_snapshot(self, snapshot: Snapshot, writer: SnapshotWriter) -> None:
        """Write the state machine's data for ``snapshot`` durably, streamed from ``writer`` (never whole in
        memory); ``save`` then makes it the current snapshot. Blocking: call it in a worker thread."""

    def receive_snapshot(self, index: int, term: int, size: int, crc: int) -> SnapshotReceiver:
        """Where the data of the leader's snapshot at (``index``, ``term``) -- ``size`` bytes, CRC-32 ``crc`` --
        goes as it arrives; the same snapshot asked for again gets the transfer held so far."""

    def snapshot_data(self, snapshot: Snapshot) -> tuple[int, int] | None:
        """(size, CRC-32) of the data held for ``snapshot`` -- written, received whole, or current -- or None."""

    def open_snapshot(self, snapshot: Snapshot) -> BinaryIO:
        """The data held for ``snapshot``, to read from the start (restore, or ship to a follower). The file
        stays readable until closed even if a newer snapshot replaces it meanwhile."""

    def close(self) -> None: ...


__all__ = [
    "Disk",
    "FileStorage",
    "MemoryStorage",
    "OsDisk",
    "SimulatedDisk",
    "SimulatedPowerLoss",
    "SnapshotReceiver",
    "Storage",
    "StorageClosedError",
    "StorageCorruptError",
]
