"""Counts of the peer messages a node sends and receives, by peer and kind: what the dashboard shows as
traffic. Counting is a dictionary increment per message; readers take differences between two readings."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from raftkv.raft.types import AppendEntries, Message, RequestVote, RequestVoteReply

Direction = Literal["sent", "received"]
TrafficKey = tuple[Direction, str, str]
"""(direction, the peer at the other end, the kind of message)."""


def message_kind(message: Message) -> str:
    """The message's class name; heartbeats and pre-votes named apart from the appends and votes they resemble."""
    if isinstance(message, AppendEntries) and not message.entries:
        return "Heartbeat"
    if isinstance(message, RequestVote | RequestVoteReply) and message.pre_vote:
        return f"Pre{type(message).__name__}"
    return type(message).__name__


class Traffic:
    """Running totals since the node started."""

    def __init__(self) -> None:
        self.totals: Counter[TrafficKey] = Counter()

    def sent(self, message: Message) -> None:
        self.totals["sent", message.dst, message_kind(message)] += 1

    def received(self, message: Message) -> None:
        self.totals["received", message.src, message_kind(message)] += 1

    def since(self, earlier: Counter[TrafficKey]) -> Counter[TrafficKey]:
        """What was counted after ``earlier`` (a copy of ``totals``) was taken."""
        return self.totals - earlier
