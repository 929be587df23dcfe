"""Watch streams are complete and in order: what a watcher received, across all its reconnections, is exactly
the reference history's events between the revision it started after and the revision it stopped at -- no
gap, no duplicate, no reordering.

The reference is a fresh watch read after the run (from revision 0, or from the compact revision when the
history no longer reaches back that far: ``reference_after``). A stream the server told it had fallen behind
(410 or ``event: compacted``) declares the revisions it skipped as a resync gap; events there are not
expected of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raftkv_harness.checks.events import ChangeEvent


@dataclass
class WatchRecord:
    """What one watcher received; ``end``: the revision it stopped at (None: it never got there)."""

    name: str
    after: int
    end: int | None
    events: list[ChangeEvent] = field(default_factory=list)
    resyncs: list[tuple[int, int]] = field(default_factory=list)  # skipped revisions (low, high]
    reconnects: int = 0

    def skipped(self, revision: int) -> bool:
        return any(low < revision <= high for low, high in self.resyncs)


def check_watch(
    streams: Sequence[WatchRecord], reference: Sequence[ChangeEvent], reference_after: int = 0
) -> list[str]:
    problems = []
    for stream in streams:
        if stream.end is None:
            problems.append(f"{stream.name}: never reached the end of the run")
            continue
        problems += _order_problems(stream)
        low = max(stream.after, reference_after)
        expected = [e for e in reference if low < e.revision <= stream.end and not stream.skipped(e.revision)]
        received = [e for e in stream.events if low < e.revision <= stream.end]
        if received != expected:
            problems.append(f"{stream.name}: {_first_difference(received, expected)}")
    return problems


def _order_problems(stream: WatchRecord) -> list[str]:
    problems = []
    seen: set[tuple[int, str]] = set()
    for before, event in zip([None, *stream.events], stream.events, strict=False):
        if before is not None and event.revision < before.revision:
            problems.append(f"{stream.name}: revision {event.revision} came after {before.revision}")
        if (event.revision, event.key) in seen:
            problems.append(f"{stream.name}: {event.key} at revision {event.revision} came twice")
        seen.add((event.revision, event.key))
    return problems


def _first_difference(received: Sequence[ChangeEvent], expected: Sequence[ChangeEvent]) -> str:
    for index, (got, wanted) in enumerate(zip(received, expected, strict=False)):
        if got != wanted:
            return f"event {index} is {got}, the history has {wanted} there"
    if len(received) < len(expected):
        return f"missing {len(expected) - len(received)} events from {expected[len(received)]} on"
    return f"{len(received) - len(expected)} events the history does not have, from {received[len(expected)]}"
