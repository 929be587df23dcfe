"""The feature clients together, and their verdict: exactly-once writes, transfers that keep the total,
complete watch streams, leases that do not end early.

``run`` lasts the whole run: clients until ``stop`` (set once the faults are healed), then a final audit, the
fence (a last write that tells the watchers the run is over), the watchers' catching up to it, and a
reference watch read from revision 0; ``report`` judges the records.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import trio

from raftkv_harness.checks.events import ChangeEvent
from raftkv_harness.checks.exactly_once import check_exactly_once
from raftkv_harness.checks.lease_safety import check_late_keep_alives, check_leases
from raftkv_harness.checks.transfers import check_transfers
from raftkv_harness.checks.watch_completeness import WatchRecord, check_watch
from raftkv_harness.features.idempotent_writers import IdempotentWriters
from raftkv_harness.features.lease_holder import LeaseHolder
from raftkv_harness.features.retrying import send_until_answered
from raftkv_harness.features.transfers import Transfers
from raftkv_harness.features.watchers import Fence, Watcher

FINISH_TIMEOUT = 60.0  # for the fence to be written and every watcher to see it


@dataclass(frozen=True)
class FeatureConfig:
    writers: int = 2
    transfer_clients: int = 2
    accounts: int = 5
    watchers: int = 2
    request_timeout: float = 1.5


@dataclass
class FeatureReport:
    """Problems per invariant (empty: it held) and what the clients did."""

    problems: dict[str, list[str]]
    figures: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return not any(self.problems.values())

    def lines(self) -> list[str]:
        lines = [
            f"{name:<24} {'held' if not problems else f'VIOLATED ({len(problems)})'}"
            for name, problems in self.problems.items()
        ]
        lines.append("features                 " + "  ".join(f"{k} {v}" for k, v in self.figures.items()))
        for name, problems in self.problems.items():
            lines += [f"{name}: {problem}" for problem in problems[:10]]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"held": self.held, "problems": self.problems, "figures": self.figures}


class FeatureWorkload:
    def __init__(
        self, urls: Sequence[str], config: FeatureConfig, *, seed: int, now: Callable[[], float]
    ) -> None:
        self.urls = list(urls)
        self.seed = seed
        timeout = config.request_timeout
        self.writers = IdempotentWriters(urls, writers=config.writers, seed=seed, timeout=timeout)
        self.transfers = Transfers(
            urls,
            clients=config.transfer_clients,
            accounts=config.accounts,
            seed=seed,
            timeout=timeout,
            now=now,
        )
        self.holder = LeaseHolder(urls, seed=seed, timeout=timeout, now=now)
        self.fence = Fence("x/fence", f"fence-{seed}")
        self.watchers = [
            Watcher(f"watcher-{i}", urls, seed=seed, fence=self.fence, timeout=timeout)
            for i in range(config.watchers)
        ]
        self.reference = Watcher("reference", urls, seed=seed, fence=self.fence, timeout=timeout)
        self.timeout = timeout

    async def prepare(self) -> None:
        """Before any fault: open the accounts."""
        await self.transfers.open_accounts()

    async def run(self, stop: trio.Event) -> None:
        """Clients until ``stop``; then the finish, within ``FINISH_TIMEOUT``. Raises RuntimeError when the fence
        or the reference read did not finish in time (a watcher that did not is the watch check's business)."""
        async with trio.open_nursery() as watching:
            for watcher in self.watchers:
                watching.start_soon(watcher.run)
            async with trio.open_nursery() as clients:
                clients.start_soon(self.writers.run, stop)
                clients.start_soon(self.transfers.run, stop)
                clients.start_soon(self.holder.run, stop)
            watching.cancel_scope.deadline = trio.current_time() + FINISH_TIMEOUT
            await self.transfers.final_audit()
            await self._write_fence()
            await self.reference.run()
        if self.reference.record.end is None:
            raise RuntimeError(f"the feature workload did not finish within {FINISH_TIMEOUT:g} s")

    async def _write_fence(self) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            answer = await send_until_answered(
                client,
                self.urls,
                random.Random(f"{self.seed}:fence"),
                "PUT",
                f"/kv/{self.fence.key}",
                json={"value": self.fence.value},
                idempotency_key=f"chaos-{self.seed}-fence",
                timeout=self.timeout,
                give_up_after=FINISH_TIMEOUT,
            )
        if answer.status != 200:
            raise RuntimeError(f"the fence was not written: {answer.status}")
        self.fence.revision = answer.body()["revision"]

    def records(self) -> dict[str, Any]:
        """Everything the checks judged, for features.json: enough to judge a run again by hand."""
        return {
            "writes": [asdict(write) for write in self.writers.writes],
            "audits": [asdict(audit) for audit in self.transfers.audits],
            "leases": [asdict(life) for life in self.holder.lives],
            "lease_probes": [asdict(probe) for probe in self.holder.probes],
            "watchers": [asdict(w.record) for w in [*self.watchers, self.reference]],
        }

    def report(self) -> FeatureReport:
        reference = self.reference.record
        reference_after = max([0, *(high for _, high in reference.resyncs)])
        streams = [watcher.record for watcher in self.watchers]
        problems = {
            "exactly-once writes": check_exactly_once(
                self.writers.writes,
                merged_events([reference, *streams]),
                covered_after(streams, reference_after),
            ),
            "transfers keep total": check_transfers(
                self.transfers.audits, self.transfers.accounts, self.transfers.total
            ),
            "watch streams complete": check_watch(streams, reference.events, reference_after),
            "leases kept alive stay": check_leases(self.holder.lives, self.holder.probes),
            "late keep-alives refused": check_late_keep_alives(self.holder.lives, self.holder.probes),
        }
        writes, counts = self.writers.writes, self.transfers.counts
        figures = {
            "writes": len(writes),
            "acknowledged": sum(1 for write in writes if write.acknowledged),
            "retried": self.writers.retried,
            "transfers": counts.committed,
            "conflicts": counts.conflicted,
            "transfers-unanswered": counts.unanswered,
            "audits": len(self.transfers.audits),
            "watch-events": sum(len(stream.events) for stream in streams),
            "reference-events": len(reference.events),
            "reference-from": reference_after,
            "reconnects": sum(stream.reconnects for stream in streams),
            "resyncs": sum(len(stream.resyncs) for stream in streams),
            "leases": len(self.holder.lives),
            "keep-alives": self.holder.keep_alives_sent,
            "lease-probes": len(self.holder.probes),
        }
        return FeatureReport(problems, figures)


def merged_events(records: Sequence[WatchRecord]) -> list[ChangeEvent]:
    """Every distinct event any of ``records`` received, in revision order."""
    seen: dict[tuple[int, str], ChangeEvent] = {}
    for record in records:
        for event in record.events:
            seen.setdefault((event.revision, event.key), event)
    return sorted(seen.values(), key=lambda event: event.revision)


def covered_after(streams: Sequence[WatchRecord], reference_after: int) -> int:
    """The revision after which the merged events are complete: 0 when a watcher saw every revision from the
    start to the fence (its completeness is checked against the reference), else the reference's start."""
    whole = [s for s in streams if s.after == 0 and s.end is not None and not s.resyncs]
    return 0 if whole else reference_after
