"""What a node replicates: any deterministic state machine fed the committed log, one entry at a time.

The node knows nothing of keys or values. It hands each committed entry to ``apply`` in log order, exactly
once, and returns whatever ``apply`` returned to the client that proposed the entry. To bound the log it asks
for a ``snapshot`` now and then, and a node that fell too far behind (or restarts) is rebuilt with ``restore``
on a fresh instance. ``raftkv.kv.KVStore`` is the key-value machine; the simulator and the tests have others.

Two rules make replicas agree: ``apply`` is a pure function of (state, entry bytes) -- no clock, no randomness,
no dependence on anything but the log -- and a restored snapshot is exactly the state it was taken of.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol

SnapshotWriter = Callable[[BinaryIO], None]
"""Writes one captured state to a binary file; called in a worker thread."""


class StateMachine(Protocol):
    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (or covered by the snapshot restored); 0 when fresh."""

    def apply(self, index: int, data: bytes | None) -> object:
        """Apply the committed entry at ``index`` (always ``applied_index + 1``) and return its outcome.

        ``data`` is None for entries that carry no command (a new leader's no-op, a membership change): they
        only advance ``applied_index``. Undecodable data must give an error outcome, never an exception."""

    def snapshot(self) -> SnapshotWriter:
        """Capture the state as of ``applied_index`` now, cheaply, and return the function that writes the
        capture; the node calls it in a worker thread while ``apply`` goes on, so the capture must not change."""

    def restore(self, data: BinaryIO) -> None:
        """Become the state a snapshot was written of (called on a fresh instance, in a worker thread)."""
