"""The simulated state machine: a running digest of every applied command, so replicas compare cheaply.

Two replicas that applied the same commands in the same order hold the same digest; the snapshot is just
``"<index>:<digest>"``, which makes a snapshot restore checkable against what every other replica applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from raftkv.raft.types import Entry, Snapshot


def chain(digest: bytes, data: bytes | None) -> bytes:
    """The digest after applying ``data`` (None, a leader's no-op, is a command too)."""
    payload = b"\x00" if data is None else b"\x01" + data
    return hashlib.blake2b(digest + payload, digest_size=8).digest()


@dataclass(slots=True)
class StateMachine:
    applied: int = 0
    digest: bytes = b""

    def apply(self, entry: Entry) -> None:
        if entry.index != self.applied + 1:
            raise AssertionError(f"applied entry {entry.index} after {self.applied}: not in order, or twice")
        self.applied, self.digest = entry.index, chain(self.digest, entry.data)

    def snapshot_data(self) -> bytes:
        return f"{self.applied}:{self.digest.hex()}".encode()

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot | None) -> StateMachine:
        if snapshot is None:
            return cls()
        index, digest = snapshot.data.decode().split(":")
        if int(index) != snapshot.index:
            raise AssertionError(f"snapshot at {snapshot.index} holds the state of index {index}")
        return cls(snapshot.index, bytes.fromhex(digest))
