"""Durable Raft state: term, vote, commit index, log and snapshot.

``FileStorage`` is the real one (see its module for the file format and why); ``MemoryStorage`` serves the
deterministic simulator. Both follow ``Storage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot
from raftkv.storage.disk import Disk, OsDisk, SimulatedPowerLoss
from raftkv.storage.errors import StorageClosedError, StorageCorruptError
from raftkv.storage.file import FileStorage
from raftkv.storage.memory import MemoryStorage
from raftkv.storage.simdisk import SimulatedDisk


class Storage(Protocol):
    def load(self) -> PersistentState:
        """What survived: the snapshot, and the contiguous entries right after it (or from index 1)."""

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        """Durably, as one atomic unit, before returning: 1. ``snapshot`` replaces the stored one and
        discards entries up to its index (all of them unless the log holds its index with its term);
        2. ``entries`` replace every stored entry from ``entries[0].index`` on; 3. ``hard_state`` replaces
        the stored one. Raises ValueError, storing nothing, if the entries would leave a gap."""

    def close(self) -> None: ...


__all__ = [
    "Disk",
    "FileStorage",
    "MemoryStorage",
    "OsDisk",
    "SimulatedDisk",
    "SimulatedPowerLoss",
    "Storage",
    "StorageClosedError",
    "StorageCorruptError",
]
