"""The seam every storage write goes through, and its real implementation.

Routing writes, fsyncs and renames through one small interface is what lets tests cut the power: a
``kill -9`` loses nothing the kernel already holds, so fsync ordering can only be checked by a disk that
remembers what was synced (``SimulatedDisk`` for in-process tests, ``OsDisk.crash`` for chaos runs).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


class SimulatedPowerLoss(Exception):
    """The simulated power went out: nothing more reaches that disk until it is rebooted (if ever)."""


class Disk(Protocol):
    """File operations by path. Writes are only durable after ``fsync``; new names after ``fsync_dir``."""

    def read(self, path: Path) -> bytes | None:
        """The whole file, or None if it does not exist."""

    def open_read(self, path: Path) -> BinaryIO:
        """The file open for reading from the start (FileNotFoundError if missing). It stays readable after
        its name is removed or replaced, as an open file does on POSIX systems."""

    def list_dir(self, directory: Path) -> list[str]: ...

    def ensure_dir(self, directory: Path) -> None: ...

    def write_new(self, path: Path, data: bytes) -> None:
        """Create the file, or empty an existing one, and write ``data``."""

    def append(self, path: Path, data: bytes) -> None: ...

    def fsync(self, path: Path) -> None: ...

    def truncate(self, path: Path, size: int) -> None: ...

    def rename(self, src: Path, dst: Path) -> None:
        """Atomically replace ``dst``; durable after ``fsync_dir`` of its directory."""

    def fsync_dir(self, directory: Path) -> None: ...

    def remove(self, path: Path) -> None: ...

    def crash(self, keep_torn: bool, rng: random.Random) -> None:
        """Lose power: everything written since its file's last fsync is gone, except, with ``keep_torn``,
        a random part of it (which may read back as zeros, as a file extended before its data landed does)."""

    def close(self) -> None: ...


ZEROED_TAIL_CHANCE = 0.25
"""How often a simulated torn tail reads back as zeros (a file extended before its data landed) rather than
as a prefix of what was written: often enough that every power-loss test run meets both."""


def choose_torn_tail(unsynced: int, rng: random.Random) -> tuple[int, bool]:
    """How many of ``unsynced`` trailing bytes survive a power cut, and whether they read back as zeros."""
    return rng.randint(0, unsynced), rng.random() < ZEROED_TAIL_CHANCE


@dataclass
class _OpenFile:
    fd: int
    size: int
    synced: int


class OsDisk:
    """The real file system. Keeps one append descriptor per file it writes and the size last fsynced.

    Thread-safe so that ``crash`` may be called while a save is in flight on another thread; after a crash
    every operation raises SimulatedPowerLoss, so nothing written after the "power cut" reaches the disk.
    ``crash`` can only cut file contents back: renames and removals already done are not undone.

    ``on_fsync``, when given, is told the seconds each file fsync took (the node's metrics), from the thread
    that made it.
    """

    def __init__(self, on_fsync: Callable[[float], None] | None = None) -> None:
        self._on_fsync = on_fsync
        self._files: dict[Path, _OpenFile] = {}
        self._lock = threading.Lock()
        self._powered_off = False

    def read(self, path: Path) -> bytes | None:
        with self._lock:
            self._check_power()
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

    def open_read(self, path: Path) -> BinaryIO:
        with self._lock:
            self._check_power()
            return path.open("rb")

    def list_dir(self, directory: Path) -> list[str]:
        with self._lock:
            self._check_power()
            return os.listdir(directory)

    def ensure_dir(self, directory: Path) -> None:
        with self._lock:
            self._check_power()
            if not directory.is_dir():
                directory.mkdir(parents=True)
                _fsync_dir(directory.parent)

    def write_new(self, path: Path, data: bytes) -> None:
        with self._lock:
            self._check_power()
            self._forget(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self._files[path] = file = _OpenFile(fd, 0, 0)
            _write_all(file, data)

    def append(self, path: Path, data: bytes) -> None:
        with self._lock:
            _write_all(self._open(path), data)

    def fsync(self, path: Path) -> None:
        with self._lock:
            file = self._open(path)
            started = time.perf_counter()
            os.fdatasync(file.fd)
            file.synced = file.size
        if self._on_fsync is not None:
            self._on_fsync(time.perf_counter() - started)

    def truncate(self, path: Path, size: int) -> None:
        with self._lock:
            file = self._open(path)
            os.ftruncate(file.fd, size)
            file.size = size
            file.synced = min(file.synced, size)

    def rename(self, src: Path, dst: Path) -> None:
        with self._lock:
            self._check_power()
            self._forget(dst)
            os.rename(src, dst)
            if src in self._files:
                self._files[dst] = self._files.pop(src)

    def fsync_dir(self, directory: Path) -> None:
        with self._lock:
            self._check_power()
            _fsync_dir(directory)

    def remove(self, path: Path) -> None:
        with self._lock:
            self._check_power()
            self._forget(path)
            os.remove(path)

    def crash(self, keep_torn: bool, rng: random.Random) -> None:
        with self._lock:
            self._check_power()
            for file in self._files.values():
                kept, zeroed = choose_torn_tail(file.size - file.synced, rng) if keep_torn else (0, False)
                os.ftruncate(file.fd, file.synced if zeroed else file.synced + kept)
                if zeroed:
                    os.ftruncate(file.fd, file.synced + kept)  # growing a file fills it with zeros
            self._close_all()
            self._powered_off = True

    def close(self) -> None:
        with self._lock:
            self._close_all()

    def _open(self, path: Path) -> _OpenFile:
        self._check_power()
        file = self._files.get(path)
        if file is None:  # a file first touched now is taken as durable as it stands
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            size = os.fstat(fd).st_size
            self._files[path] = file = _OpenFile(fd, size, size)
        return file

    def _forget(self, path: Path) -> None:
        file = self._files.pop(path, None)
        if file is not None:
            os.close(file.fd)

    def _close_all(self) -> None:
        for file in self._files.values():
            os.close(file.fd)
        self._files.clear()

    def _check_power(self) -> None:
        if self._powered_off:
            raise SimulatedPowerLoss("the disk lost power")


def _write_all(file: _OpenFile, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(file.fd, view)
        view = view[written:]
        file.size += written


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
