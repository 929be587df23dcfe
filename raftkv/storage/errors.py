"""Errors the storage layer raises to its callers."""

from __future__ import annotations

from pathlib import Path


class StorageCorruptError(Exception):
    """Stored data is damaged in a way a crash cannot explain, so the node must not start on it.

    A torn record at the end of the log is what a power cut leaves behind and is repaired silently; this
    error is for everything else (a bad record with valid data after it, a damaged snapshot), where guessing
    would risk forgetting an acknowledged entry or a vote.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(path, offset, reason)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: corrupt at offset {self.offset}: {self.reason}"


class StorageClosedError(Exception):
    """``save`` after ``close()``, after a simulated power cut, or after a failed write.

    After a failed write or fsync the file's durable contents are unknown (a retried fsync can report
    success for data that was lost), so the only safe move is to stop and recover from disk on restart.
    """
