"""Storage kept in memory, for the deterministic simulator: a "crash" is dropping the node, not the storage."""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot
from raftkv.storage.log_state import LogState


class MemoryStorage:
    """Every save is durable the moment it returns, which is what a simulated crash between steps needs.

    Only immutable values are kept (frozen entries, copied into a private list; ``load`` hands out tuples),
    so a restarted node can never see changes its previous incarnation made to its own objects.
    """

    def __init__(self) -> None:
        self._state = LogState()

    def load(self) -> PersistentState:
        return self._state.persistent_state()

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        self._state.check(entries, snapshot)
        self._state.apply(hard_state, entries, snapshot)

    def close(self) -> None:
        """Nothing to release; the state stays so a simulated restart can ``load`` it."""
