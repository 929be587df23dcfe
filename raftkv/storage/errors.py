"""Errors the storage layer raises to its callers, and the rule that decides when it is closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StorageCorruptError(Exception):
    """Stored data is damaged in a way a crash cannot explain, so the node must not start on it.

    A torn record at the end of the log is what a power cut leaves behind and is repaired silently; this
    error is for everything else (a bad record with valid data after it, a damaged snapshot), where guessing
    would risk forgetting an acknowledged entry or a vote. An incoming snapshot that fails its checksum raises
    it too, from ``SnapshotReceiver.write``: there it condemns the transfer only, which starts over.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(path, offset, reason)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: corrupt at offset {self.offset}: {self.reason}"


class StorageClosedError(Exception):
    """A write (a save, a snapshot written or received) after ``close()``, after a simulated power cut, or
    after any write failed.

    After a failed write or fsync the file's durable contents are unknown (a retried fsync can report
    success for data that was lost), so the only safe move is to stop and recover from disk on restart.
    """


class FailStop:
    """The rule behind StorageClosedError, shared by everything that writes one storage's files: once closed,
    or once any write fails, nothing more is written until the storage is opened again (and recovers)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.closed = False

    def check(self) -> None:
        if self.closed:
            raise StorageClosedError(f"storage in {self._directory} is closed")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around disk writes: refuse them once closed, and close if one of them fails."""
        self.check()
        try:
            yield
        except BaseException:
            self.closed = True
            raise
