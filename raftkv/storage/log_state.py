"""The stored Raft state as plain memory, and the one place the rules of a save live.

Both backends apply saves through this class (``FileStorage`` also replays its log through it on start),
so the two cannot drift apart in what a save means.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.raft.types import Entry, HardState, PersistentState, Snapshot


class LogState:
    """Hard state, snapshot, and the entries after the snapshot (``entries[i].index == first_index + i``)."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    @property
    def first_index(self) -> int:
        return (self.snapshot.index if self.snapshot is not None else 0) + 1

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``, counting the snapshot's last entry; None if not held."""
        if self.snapshot is not None and index == self.snapshot.index:
            return self.snapshot.term
        offset = index - self.first_index
        return self.entries[offset].term if 0 <= offset < len(self.entries) else None

    def check(self, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        """Raise ValueError, changing nothing, unless the save keeps the log contiguous.

        A violation is a bug in the caller; refusing it here stops it from being made durable.
        """
        if not entries:
            return
        if snapshot is None:
            first, last = self.first_index, self.last_index
        else:
            first = snapshot.index + 1
            last = self.last_index if self.term_at(snapshot.index) == snapshot.term else snapshot.index
        start = entries[0].index
        if not first <= start <= last + 1:
            raise ValueError(f"entries start at {start}, outside the writable range {first}..{last + 1}")
        for position, entry in enumerate(entries, start):
            if entry.index != position:
                raise ValueError(f"entries are not contiguous: index {entry.index} where {position} belongs")

    def moves_only_commit(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> bool:
        """Whether the save changes nothing but the commit index. Such a save need not reach the disk at once:
        losing it in a crash leaves an older commit index, which is still true (entries once committed stay
        committed), and the leader tells a restarted node the current one. Term and vote, like entries, must
        be durable before anyone is told."""
        return (
            hard_state is not None
            and not entries
            and snapshot is None
            and (hard_state.term, hard_state.vote) == (self.hard_state.term, self.hard_state.vote)
        )

    def apply(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """Snapshot, then entries, then hard state, as ``Storage.save`` defines them (call ``check`` first)."""
        if snapshot is not None:
            if self.term_at(snapshot.index) == snapshot.term:
                del self.entries[: snapshot.index + 1 - self.first_index]
            else:
                self.entries.clear()
            self.snapshot = snapshot
        if entries:
            del self.entries[entries[0].index - self.first_index :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def persistent_state(self) -> PersistentState:
        return PersistentState(self.hard_state, self.snapshot, tuple(self.entries))
