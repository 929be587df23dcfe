"""Stage timings of one request, for the ``X-Raft-Trace`` header: where the time of a single write goes.

A client that sends ``X-Raft-Trace`` (any value) gets the header back: comma-separated ``stage=seconds`` pairs
in the order the stages happened, each the time since the answering node received the request, on that
node's monotonic clock. A write on the leader passes ``received``, ``proposed`` (appended to the leader's log),
``sent`` (handed to the peer senders, before the leader's own fsync), ``persisted`` (that fsync done),
``acked`` (the first follower's acknowledgement arrived, which includes that follower's fsync; it may come
before ``persisted``), ``committed``, ``applied`` and ``answered``. A follower that forwards the write adds
``forwarded`` and relays the leader's stages, prefixed ``leader.`` and moved onto its own clock. Untraced
requests pay nothing but a dictionary lookup.
"""

from __future__ import annotations

import time
from typing import Final

TRACE_HEADER: Final = "X-Raft-Trace"


class StageClock:
    """The moments one request reached each stage; a stage seen twice keeps its first moment."""

    __slots__ = ("stages", "start")

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {"received": 0.0}

    def mark(self, stage: str) -> None:
        self.stages.setdefault(stage, time.perf_counter() - self.start)

    def relay(self, prefix: str, header: str, sent_at: float) -> None:
        """Take another node's stages (its header), which began when we sent it the request at ``sent_at``
        (seconds on our clock since our start). Malformed pairs are skipped: a trace is never worth a failure."""
        for item in header.split(","):
            name, sep, value = item.strip().partition("=")
            try:
                seconds = float(value)
            except ValueError:
                continue
            if sep and name:
                self.stages.setdefault(f"{prefix}{name}", sent_at + seconds)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def header(self) -> str:
        return ",".join(f"{stage}={seconds:.6f}" for stage, seconds in self.stages.items())
