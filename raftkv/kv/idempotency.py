"""The idempotency table: per idempotency key, the first outcome and the fingerprint of the request.

A client retries a write whose answer it did not get (perhaps through a new leader, after the first attempt did
commit); the retry finds the key and returns the first outcome instead of writing twice. Keys are forgotten
oldest first, by count (``capacity``) and by age in log indices (``window``), never by a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from raftkv.kv.results import Outcome

DEFAULT_IDEMPOTENCY_CAPACITY: Final = 10_000
"""How many idempotency keys are remembered; the oldest (by apply order) is forgotten first.

Each costs its outcome (a few hundred bytes, more for a transaction's results) in memory and in every
snapshot: ten thousand keep both within a few megabytes. When every write carries a key (``raftkv.client``
gives each one), this count binds before the window: at the busiest, ten thousand keys are seconds of writes."""

DEFAULT_IDEMPOTENCY_WINDOW: Final = 100_000
"""How many log indices an idempotency key is remembered for: one recorded at index I answers the entries up
to index I + window.

A retry comes within its client's deadline (``raftkv.client`` gives a call 30 seconds); at the few thousand
writes a second a cluster commits (the README's benchmark), that is of the order of 100,000 entries. Past
the window a key is new again, so an outcome is never handed back long after the fact, however few keyed
writes push it out by count. The count binds first when more than a tenth of the entries carry keys."""


@dataclass(frozen=True, slots=True)
class Remembered:
    """The first outcome under an idempotency key, the ``fingerprint`` of its command, and its log ``index``."""

    fingerprint: str
    index: int
    outcome: Outcome


class IdempotencyTable:
    """The keys in apply order (a deque of pairs, made once, so a capture copies references only) and by key;
    a key is recorded only when absent, so the two hold the same keys."""

    def __init__(
        self,
        capacity: int = DEFAULT_IDEMPOTENCY_CAPACITY,
        window: int = DEFAULT_IDEMPOTENCY_WINDOW,
        entries: Iterable[tuple[str, Remembered]] = (),
    ) -> None:
        """A table of at most ``capacity`` keys, each kept ``window`` indices; ``entries`` oldest first."""
        if capacity < 1 or window < 1:
            raise ValueError("idempotency capacity and window must be at least 1")
        self.capacity, self.window = capacity, window
        self._in_order: deque[tuple[str, Remembered]] = deque(entries)  # oldest first: by index
        self._by_key = dict(self._in_order)

    def __len__(self) -> int:
        return len(self._in_order)

    def get(self, idempotency_key: str) -> Remembered | None:
        return self._by_key.get(idempotency_key)

    def remember(self, idempotency_key: str, remembered: Remembered) -> None:
        """Record a key not in the table (at an index above all recorded), forgetting the oldest if over
        ``capacity``."""
        self._in_order.append((idempotency_key, remembered))
        self._by_key[idempotency_key] = remembered
        if len(self._in_order) > self.capacity:
            self._forget_oldest()

    def age(self, index: int) -> None:
        """Forget the keys recorded more than ``window`` indices before ``index``, the entry now applied."""
        while self._in_order and index - self._in_order[0][1].index > self.window:
            self._forget_oldest()

    def entries(self) -> list[tuple[str, Remembered]]:
        """The keys, oldest first; the pairs are immutable, so this copy is a snapshot capture."""
        return list(self._in_order)

    def _forget_oldest(self) -> None:
        idempotency_key, _ = self._in_order.popleft()
        del self._by_key[idempotency_key]
