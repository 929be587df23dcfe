"""Leases never end early: while a holder keeps its lease alive, the key on it stays.

The leader starts a lease's countdown when it applies the grant or takes a keep-alive, which is after the
holder sent it; a keep-alive is acknowledged only while the lease exists. So once the key was put, a
linearizable read that finds it absent -- at a moment no later than the read's return -- must come at least
``ttl`` after the send time of every acknowledged grant and keep-alive. ``CLOCK_MARGIN`` allows for float
rounding and the timers of two processes: the harness and the nodes all read this machine's monotonic clock.
A holder cut off from the cluster simply gets no acknowledgements, which this check reads as not keeping
the lease alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

CLOCK_MARGIN: Final = 0.1


@dataclass
class LeaseLife:
    """One lease and its key; times on the harness's clock. ``renewals``: send times of the acknowledged grant
    and keep-alives; ``established``: when the put of the key on the lease was acknowledged; ``gone_at``: when
    a keep-alive was answered 404 (not judged: it tells a reader of the record when the holder gave up)."""

    key: str
    ttl: float
    established: float
    renewals: list[float] = field(default_factory=list)
    gone_at: float | None = None


@dataclass(frozen=True)
class Probe:
    key: str
    call: float
    ret: float
    present: bool


def check_leases(
    lives: Sequence[LeaseLife], probes: Sequence[Probe], margin: float = CLOCK_MARGIN
) -> list[str]:
    by_key = {life.key: life for life in lives}
    problems = []
    for probe in probes:
        life = by_key.get(probe.key)
        if probe.present or life is None or probe.call < life.established or not life.renewals:
            continue
        kept_until = max(life.renewals) + life.ttl
        if probe.ret < kept_until - margin:
            problems.append(
                f"{probe.key} absent at {probe.ret:.2f} s, {kept_until - probe.ret:.2f} s before its lease "
                f"could end (last acknowledged renewal sent at {max(life.renewals):.2f} s, ttl {life.ttl:g} s)"
            )
    return problems
