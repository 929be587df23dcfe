"""A seeded, lossy network between simulated nodes: drops, delays, duplicates, reorders and partitions.

Time is counted in sub-ticks (``SUBTICKS`` per tick) so that messages interleave with the nodes' ticks at a
finer grain than the election clock. Links are directed: a partition may be one-way or non-transitive.
"""

from __future__ import annotations

import random
from collections import defaultdict

from raftkv.raft.types import AnyMessage, NodeId

SUBTICKS = 4


class Network:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.drop_rate = 0.0
        self.duplicate_rate = 0.0
        self.max_delay = 1  # in sub-ticks, at least 1
        self.straggler_rate = 0.0  # the share of messages held back for up to ``straggler_delay``
        self.straggler_delay = 1
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.in_flight: defaultdict[int, list[AnyMessage]] = defaultdict(list)

    def connected(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) not in self.blocked

    def send(self, message: AnyMessage, now: int) -> bool:
        """Queue ``message``; False when the link is cut (the sender's transport would notice)."""
        if not self.connected(message.src, message.dst):
            return False
        copies = 2 if self.rng.random() < self.duplicate_rate else 1
        for _ in range(copies):
            if self.rng.random() >= self.drop_rate:
                straggles = self.rng.random() < self.straggler_rate
                delay = self.rng.randint(1, self.straggler_delay if straggles else self.max_delay)
                self.in_flight[now + delay].append(message)
        return True

    def arrivals(self, now: int) -> list[AnyMessage]:
        """Messages due now, shuffled, minus those whose link was cut while they were in flight."""
        due = self.in_flight.pop(now, [])
        self.rng.shuffle(due)
        return [m for m in due if self.connected(m.src, m.dst)]

    def lose_in_flight(self, src: NodeId, dsts: set[NodeId]) -> None:
        """Drop what ``src`` sent to ``dsts`` that has not arrived yet, as a crash loses a sender's queue."""
        for due, messages in self.in_flight.items():
            self.in_flight[due] = [m for m in messages if m.src != src or m.dst not in dsts]

    def partition(self, groups: list[list[NodeId]]) -> None:
        """Cut every link between different groups (both ways)."""
        self.blocked = {
            (a, b) for group in groups for other in groups if other is not group for a in group for b in other
        }

    def heal(self) -> None:
        """Reconnect everyone and stop losing or holding back messages (they still overtake each other)."""
        self.blocked = set()
        self.drop_rate = self.duplicate_rate = self.straggler_rate = 0.0
        self.max_delay = min(self.max_delay, SUBTICKS)
