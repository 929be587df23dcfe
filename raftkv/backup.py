"""Backups: a consistent point-in-time copy of the state machine, as one self-describing file.

A backup is a header line -- ``RAFTKV-BACKUP 1 `` then JSON with the snapshot's index, term, configuration,
and its data's size and CRC-32 -- followed by exactly that data. ``GET /cluster/snapshot`` streams one (the
state as of a linearizable read on the leader), ``raftkv snapshot save`` stores it, and ``raftkv restore``
makes from it the data directory of a one-node cluster holding exactly that state, which then grows with
``--join``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from raftkv.machine import SnapshotWriter
from raftkv.raft.membership import Membership
from raftkv.raft.types import HardState, Snapshot
from raftkv.storage import FileStorage

MAGIC: Final = b"RAFTKV-BACKUP 1 "
COPY_BYTES: Final = 1 << 20  # backups are read and written in pieces of this size, never whole
MAX_HEADER_BYTES: Final = 1 << 20  # a header line longer than this is not a backup


class BackupError(ValueError):
    """A file that is not a whole, intact backup; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class BackupHeader:
    snapshot: Snapshot
    size: int
    crc: int

    def encode(self) -> bytes:
        membership = self.snapshot.membership
        fields = {
            "index": self.snapshot.index,
            "term": self.snapshot.term,
            "membership": json.loads(membership.encode()),
            "size": self.size,
            "crc": self.crc,
        }
        return MAGIC + json.dumps(fields, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> BackupHeader:
        if not line.startswith(MAGIC) or not line.endswith(b"\n"):
            raise BackupError("not a raftkv backup (no header line)")
        try:
            fields = json.loads(line[len(MAGIC) :])
            membership = Membership.decode(json.dumps(fields["membership"]).encode())
            snapshot = Snapshot(int(fields["index"]), int(fields["term"]), membership)
            return cls(snapshot, int(fields["size"]), int(fields["crc"]))
        except (ValueError, KeyError, TypeError) as e:
            raise BackupError(f"unreadable backup header: {e}") from None


def write_data(path: Path, writer: SnapshotWriter) -> tuple[int, int]:
    """Write a state machine's snapshot data to ``path``; its (size, CRC-32), read back in pieces. Blocking."""
    with path.open("wb") as out:
        writer(out)
    size, crc = path.stat().st_size, 0
    with path.open("rb") as data:
        for piece in pieces(data, size):
            crc = zlib.crc32(piece, crc)
    return size, crc


def read_header(backup: BinaryIO) -> BackupHeader:
    return BackupHeader.decode(backup.readline(MAX_HEADER_BYTES))


def pieces(data: BinaryIO, size: int) -> Iterator[bytes]:
    """``size`` bytes of ``data`` in pieces of at most COPY_BYTES; BackupError if it ends early."""
    left = size
    while left:
        piece = data.read(min(COPY_BYTES, left))
        if not piece:
            raise BackupError(f"the backup ends {left} bytes early")
        left -= len(piece)
        yield piece


def restore_data_dir(
    backup: BinaryIO,
    data_dir: Path,
    node_id: str,
    url: str,
    progress: Callable[[int], None] = lambda copied: None,
) -> BackupHeader:
    """Make ``data_dir`` (new or empty) the data directory of a one-node cluster, ``node_id`` at ``url``,
    holding exactly the backed-up state; ``progress`` is told the bytes of data copied so far, piece by piece.
    Blocking; BackupError for a damaged backup (nothing is kept)."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore makes a new data directory")
    header = read_header(backup)
    snapshot = Snapshot(header.snapshot.index, header.snapshot.term, Membership.of([node_id], {node_id: url}))
    storage = FileStorage(data_dir)
    try:
        crc = copied = 0

        def copy(out: BinaryIO) -> None:
            nonlocal crc, copied
            for piece in pieces(backup, header.size):
                crc = zlib.crc32(piece, crc)
                out.write(piece)
                copied += len(piece)
                progress(copied)
            if crc != header.crc:
                raise BackupError("the backup's data does not match its checksum")

        storage.write_snapshot(snapshot, copy)
        storage.save(HardState(term=snapshot.term, vote=None, commit=snapshot.index), [], snapshot)
    finally:
        storage.close()
    return header
