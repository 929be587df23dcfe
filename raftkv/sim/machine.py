"""The simulated state machine: a running digest of every applied command, so replicas compare cheaply.

Two replicas that applied the same commands in the same order hold the same digest; the snapshot is just
``"<index>:<digest>"``, which makes a snapshot restore checkable against what every other replica applied.
It implements ``raftkv.machine.StateMachine``, the protocol the real node replicates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from raftkv.machine import SnapshotWriter


def chain(digest: bytes, data: bytes | None) -> bytes:
    """The digest after applying ``data`` (None, a leader's no-op, is a command too)."""
    payload = b"\x00" if data is None else b"\x01" + data
    return hashlib.blake2b(digest + payload, digest_size=8).digest()


@dataclass(slots=True)
class DigestMachine:
    applied_index: int = 0
    digest: bytes = b""

    def apply(self, index: int, data: bytes | None) -> bytes:
        if index != self.applied_index + 1:
            raise AssertionError(f"applied entry {index} after {self.applied_index}: not in order, or twice")
        self.applied_index, self.digest = index, chain(self.digest, data)
        return self.digest

    def snapshot(self) -> SnapshotWriter:
        image = f"{self.applied_index}:{self.digest.hex()}".encode()

        def write(out: BinaryIO) -> None:
            out.write(image)

        return write

    def restore(self, data: BinaryIO) -> None:
        index, digest = data.read().decode().split(":")
        self.applied_index, self.digest = int(index), bytes.fromhex(digest)
