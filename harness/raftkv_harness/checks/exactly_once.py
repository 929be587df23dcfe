"""Exactly-once: a write retried with one Idempotency-Key takes effect once, whatever node each retry reached.

Every write carries a value no other write has, so the change events name the writes that took effect: each
value may appear at most once, and an acknowledged write's value must appear exactly once, at the revision
its answer gave. Events of revisions up to ``covered_after`` may be missing from the record (a compacted
history), so acknowledged writes of those revisions are not looked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from raftkv_harness.checks.events import ChangeEvent


@dataclass(frozen=True)
class IdempotentWrite:
    """One logical write and its retries: ``status`` of the last answer (None: none came), ``revision`` from
    the acknowledged answer."""

    key: str
    value: str
    attempts: int
    status: int | None
    revision: int | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status == 200


def check_exactly_once(
    writes: Sequence[IdempotentWrite], events: Sequence[ChangeEvent], covered_after: int = 0
) -> list[str]:
    keys = {write.key for write in writes}
    applied = Counter(event.value for event in events if event.type == "put" and event.key in keys)
    at_revision = {(event.revision, event.key): event.value for event in events if event.type == "put"}
    problems = []
    for write in writes:
        times = applied[write.value]
        if times > 1:
            problems.append(f"write {write.value!r} to {write.key} applied {times} times")
        if write.status == 422:
            problems.append(f"write {write.value!r}: a retry with the same body was refused (422)")
        if not write.acknowledged or write.revision is None or write.revision <= covered_after:
            continue
        if at_revision.get((write.revision, write.key)) != write.value:
            problems.append(
                f"acknowledged write {write.value!r} to {write.key} at revision {write.revision} "
                "is not in the history"
            )
    return problems
