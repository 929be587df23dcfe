"""Leases never end early: while a holder keeps its lease alive, the key on it stays.

The leader starts a lease's countdown when it applies the grant or takes a keep-alive, which is after the
holder sent it; a keep-alive is acknowledged only while the lease exists. So once the key was put, a
linearizable read that finds it absent -- at a moment no later than the read's return -- must come at least
``ttl`` after the send time of every acknowledged grant and keep-alive. ``CLOCK_MARGIN`` allows for float
rounding and the timers of two processes: the harness and the nodes all read this machine's monotonic clock.
A holder cut off from the cluster simply gets no acknowledgements, which this check reads as not keeping
the lease alive.

Early ends come in two kinds, reported apart: ``check_leases`` those of leases renewed in time all along, and
``check_late_keep_alives`` those that followed a late renewal (acknowledged more than ``ttl`` after the one
before it was sent): the lease may have run out at the leader before it arrived, so that keep-alive should
have been answered 404, not acknowledged and then undone by the revoke already under way.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

CLOCK_MARGIN: Final = 0.1


@dataclass(frozen=True)
class Renewal:
    """An acknowledged grant or keep-alive: it reached the leader between ``sent`` and ``acknowledged``."""

    sent: float
    acknowledged: float


@dataclass
class LeaseLife:
    """One lease and its key; times on the harness's clock. ``renewals``: the acknowledged grant and
    keep-alives, in order; ``established``: when the put of the key on the lease was acknowledged; ``gone_at``: when
    a keep-alive was answered 404 (not judged: it tells a reader of the record when the holder gave up)."""

    key: str
    ttl: float
    established: float
    renewals: list[Renewal] = field(default_factory=list)
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
    return [message for late, message in _early_ends(lives, probes, margin) if not late]


def check_late_keep_alives(
    lives: Sequence[LeaseLife], probes: Sequence[Probe], margin: float = CLOCK_MARGIN
) -> list[str]:
    return [message for late, message in _early_ends(lives, probes, margin) if late]


def _early_ends(lives: Sequence[LeaseLife], probes: Sequence[Probe], margin: float) -> list[tuple[bool, str]]:
    """Every read that found a key absent before its lease could end, and whether a late renewal came first."""
    by_key = {life.key: life for life in lives}
    found = []
    for probe in probes:
        life = by_key.get(probe.key)
        if probe.present or life is None or probe.call < life.established or not life.renewals:
            continue
        last = max(renewal.sent for renewal in life.renewals)
        if probe.ret >= last + life.ttl - margin:
            continue
        late = any(
            after.acknowledged > before.sent + life.ttl and before.sent + life.ttl < probe.ret
            for before, after in itertools.pairwise(life.renewals)
        )
        found.append(
            (
                late,
                f"{probe.key} absent at {probe.ret:.2f} s, {last + life.ttl - probe.ret:.2f} s before its lease "
                f"could end (last acknowledged renewal sent at {last:.2f} s, ttl {life.ttl:g} s"
                f"{', after a late one' if late else ''})",
            )
        )
    return found
