"""An in-memory disk that can lose power at any operation, for tests of crash safety.

It keeps two views, as a real machine does: what programs see (the page cache: current contents and
names) and what would survive a power cut (each file's contents as of its last fsync, the names as of the
last directory fsync). ``crash`` throws the first view away.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from raftkv.storage.disk import SimulatedPowerLoss, choose_torn_tail


@dataclass
class _SimFile:
    """One inode: several names may point at it for a while (a rename not yet made durable)."""

    data: bytearray
    durable: bytes


_NameChange = tuple[tuple[Path, _SimFile | None], ...]  # applied atomically; None removes the name


class SimulatedDisk:
    """A ``Disk`` in memory. ``power_off_after(n)`` makes the n-th mutating operation from now take
    effect (in the volatile view) and then raise SimulatedPowerLoss, as does every operation after it
    until ``crash`` reboots the disk.

    Name changes (create, rename, remove) are journalled in order: ``fsync_dir`` commits all of them, as a
    journal commit does, and a crash with ``keep_torn`` commits a random prefix of the rest, because a real
    file system may persist metadata early: code that removes a file too soon is caught that way.
    """

    def __init__(self) -> None:
        self._names: dict[Path, _SimFile] = {}
        self._durable_names: dict[Path, _SimFile] = {}
        self._pending: list[_NameChange] = []
        self._ops_left: int | None = None

    def power_off_after(self, operations: int) -> None:
        if operations < 1:
            raise ValueError("the power goes out after at least one operation")
        self._ops_left = operations

    def read(self, path: Path) -> bytes | None:
        self._check_power()
        file = self._names.get(path)
        return None if file is None else bytes(file.data)

    def open_read(self, path: Path) -> BinaryIO:
        """A copy of the contents as they stand, which outlives the name as an open file does. (Unlike an open
        file it misses later writes: storage only reads a file that nothing is writing.)"""
        self._check_power()
        file = self._names.get(path)
        if file is None:
            raise FileNotFoundError(path)
        return io.BytesIO(bytes(file.data))

    def list_dir(self, directory: Path) -> list[str]:
        self._check_power()
        return [path.name for path in self._names if path.parent == directory]

    def ensure_dir(self, directory: Path) -> None:
        """Directories are implicit in the names."""

    def write_new(self, path: Path, data: bytes) -> None:
        self._check_power()
        self._open(path).data[:] = data
        self._tick()

    def append(self, path: Path, data: bytes) -> None:
        self._check_power()
        self._open(path).data += data
        self._tick()

    def fsync(self, path: Path) -> None:
        self._check_power()
        file = self._names[path]
        file.durable = bytes(file.data)
        self._tick()

    def truncate(self, path: Path, size: int) -> None:
        self._check_power()
        del self._names[path].data[size:]
        self._tick()

    def rename(self, src: Path, dst: Path) -> None:
        self._check_power()
        self._change_names(((dst, self._names[src]), (src, None)))
        self._tick()

    def fsync_dir(self, directory: Path) -> None:
        self._check_power()
        self._commit_names(len(self._pending))
        self._tick()

    def remove(self, path: Path) -> None:
        self._check_power()
        self._change_names(((path, None),))
        self._tick()

    def crash(self, keep_torn: bool, rng: random.Random) -> None:
        """Reboot from what was durable. With ``keep_torn``, some pending name changes may land, and a file
        that only grew since its fsync may keep a torn tail."""
        self._commit_names(rng.randint(0, len(self._pending)) if keep_torn else 0)
        self._pending.clear()
        for file in self._durable_names.values():
            contents = file.durable
            unsynced = len(file.data) - len(contents)
            if keep_torn and unsynced > 0 and file.data.startswith(contents):
                kept, zeroed = choose_torn_tail(unsynced, rng)
                contents += bytes(kept) if zeroed else file.data[len(contents) : len(contents) + kept]
            file.data = bytearray(contents)
            file.durable = contents
        self._names = dict(self._durable_names)
        self._ops_left = None

    def close(self) -> None:
        """Nothing to release: the disk outlives the storage that used it, as hardware does."""

    def _open(self, path: Path) -> _SimFile:
        file = self._names.get(path)
        if file is None:
            file = _SimFile(bytearray(), b"")
            self._change_names(((path, file),))
        return file

    def _change_names(self, change: _NameChange) -> None:
        _apply(change, self._names)
        self._pending.append(change)

    def _commit_names(self, count: int) -> None:
        for change in self._pending[:count]:
            _apply(change, self._durable_names)
        del self._pending[:count]

    def _check_power(self) -> None:
        if self._ops_left == 0:
            raise SimulatedPowerLoss("the disk lost power")

    def _tick(self) -> None:
        if self._ops_left is not None:
            self._ops_left -= 1
            self._check_power()


def _apply(change: _NameChange, names: dict[Path, _SimFile]) -> None:
    for path, file in change:
        if file is None:
            del names[path]
        else:
            names[path] = file
