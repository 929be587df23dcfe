"""The in-memory Raft log: a compacted prefix (the snapshot) followed by the entries after it.

Indices are absolute: entry ``i`` lives at ``entries[i - first_index]``. The log also tracks three cursors the
core needs to build ``Ready`` batches: ``committed`` (known to be on a quorum), ``applied`` (handed out to the
state machine) and ``unstable`` (the first index not yet handed to storage) -- and the configurations it holds
(every MEMBERSHIP entry after the snapshot), so that the latest one is known at once and a truncation falls back
to the one before it (thesis §4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.raft.membership import Membership
from raftkv.raft.types import Entry, EntryKind, Snapshot


class LogError(Exception):
    """An operation that would break a Raft invariant (a bug in the caller, never bad input)."""


class RaftLog:
    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry], commit: int) -> None:
        self.snapshot = snapshot
        self.snapshot_index = snapshot.index if snapshot else 0
        self.snapshot_term = snapshot.term if snapshot else 0
        self.entries: list[Entry] = list(entries)
        if self.entries and self.entries[0].index != self.snapshot_index + 1:
            raise LogError(f"log starts at {self.entries[0].index}, expected {self.snapshot_index + 1}")
        self.configs: list[tuple[int, Membership]] = []  # (index, configuration) of each MEMBERSHIP entry
        self._note_configs(self.entries)
        self.committed = min(max(commit, self.snapshot_index), self.last_index)
        self.applied = self.snapshot_index
        self.unstable = self.last_index + 1
        self.unstable_snapshot: Snapshot | None = None

    # --- queries ---------------------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    @property
    def membership(self) -> Membership:
        """The configuration this server acts on: the latest in its log, committed or not (thesis §4.1)."""
        return self.configs[-1][1] if self.configs else self.snapshot_membership

    @property
    def snapshot_membership(self) -> Membership:
        return self.snapshot.membership if self.snapshot is not None else Membership()

    @property
    def last_config_index(self) -> int:
        """The index of the latest configuration: the snapshot's when the log after it holds none."""
        return self.configs[-1][0] if self.configs else self.snapshot_index

    def membership_at(self, index: int) -> Membership:
        """The configuration in force at ``index`` (not below the snapshot): what a snapshot there records."""
        if index < self.snapshot_index:
            raise LogError(f"the configuration at {index} is compacted (snapshot at {self.snapshot_index})")
        held = [membership for config_index, membership in self.configs if config_index <= index]
        return held[-1] if held else self.snapshot_membership

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if it is compacted away or beyond the end. Index 0, before
        the first entry, has term 0 in every log."""
        if index == 0:
            return 0
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            return None
        return self.entries[index - self.first_index].term

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log is at least as up to date as ours if its last term is higher, or equal and as long."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def slice(self, lo: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``lo`` on, at least one (if any), at most ``max_entries`` and about ``max_bytes``."""
        start = lo - self.first_index
        if start < 0:
            raise LogError(f"entry {lo} is compacted (first index {self.first_index})")
        batch: list[Entry] = []
        size = 0
        for entry in self.entries[start : start + max_entries]:
            size += len(entry.data or b"")
            if batch and size > max_bytes:
                break
            batch.append(entry)
        return tuple(batch)

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term of ``index`` (for the conflict hint)."""
        term = self.term_at(index)
        while index - 1 > self.snapshot_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding ``term``, or None when this log has no entry of that term."""
        for entry in reversed(self.entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                return None
        return None

    # --- changes ---------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append after the last entry, or truncate a conflicting suffix and append (never below commit)."""
        if not entries:
            return
        at = entries[0].index
        if at <= self.committed:
            raise LogError(f"truncating at {at} would drop committed entries (commit {self.committed})")
        if at > self.last_index + 1:
            raise LogError(f"gap: appending {at} after {self.last_index}")
        del self.entries[at - self.first_index :]
        while self.configs and self.configs[-1][0] >= at:
            self.configs.pop()  # truncated away: the configuration before it is in force again
        self.entries.extend(entries)
        self._note_configs(entries)
        self.unstable = min(self.unstable, at)

    def merge(self, entries: Sequence[Entry]) -> None:
        """Follower side of AppendEntries after the consistency check passed: skip entries we already hold
        with the same term (a delayed or duplicated message must never truncate), truncate at the first
        conflict, append the rest."""
        for offset, entry in enumerate(entries):
            if entry.index <= self.snapshot_index:
                continue
            existing = self.term_at(entry.index)
            if existing != entry.term:
                self.append(entries[offset:])
                return

    def commit_to(self, index: int) -> bool:
        """Raise the commit index (it never moves backwards); returns whether it moved."""
        index = min(index, self.last_index)
        if index <= self.committed:
            return False
        self.committed = index
        return True

    def take_unstable(self) -> list[Entry]:
        """Entries not yet handed to storage; the caller persists them before anything depends on them."""
        start = max(self.unstable, self.first_index) - self.first_index
        pending = self.entries[start:]
        self.unstable = self.last_index + 1
        return pending

    def take_committed(self) -> list[Entry]:
        """Committed entries not yet handed to the state machine, in order, each exactly once."""
        if self.committed <= self.applied:
            return []
        batch = self.entries[self.applied - self.snapshot_index : self.committed - self.snapshot_index]
        self.applied = self.committed
        return batch

    def snapshot_at(self, index: int) -> Snapshot:
        """The description of a snapshot at ``index`` (already applied by the caller), for ``compact``."""
        term = self.term_at(index)
        if term is None or index > self.applied or index < self.snapshot_index:
            raise LogError(f"cannot snapshot at {index} (applied {self.applied}, first {self.first_index})")
        return Snapshot(index=index, term=term, membership=self.membership_at(index))

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries up to the snapshot's index, keeping the snapshot in their place."""
        if snapshot != self.snapshot_at(snapshot.index):
            raise LogError(f"{snapshot} does not describe this log at {snapshot.index}")
        del self.entries[: snapshot.index - self.snapshot_index]
        self.configs = [(index, membership) for index, membership in self.configs if index > snapshot.index]
        self.snapshot, self.snapshot_index, self.snapshot_term = snapshot, snapshot.index, snapshot.term

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot from the leader (our log did not contain its last entry)."""
        self.snapshot, self.snapshot_index, self.snapshot_term = snapshot, snapshot.index, snapshot.term
        self.entries = []
        self.configs = []
        self.committed = self.applied = snapshot.index
        self.unstable = snapshot.index + 1
        self.unstable_snapshot = snapshot

    def _note_configs(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if entry.kind is EntryKind.MEMBERSHIP:
                if entry.data is None:
                    raise LogError(f"membership entry {entry.index} carries no configuration")
                self.configs.append((entry.index, Membership.decode(entry.data)))
