"""A seeded nemesis: one fault at a time against a running cluster, each healed after a few seconds.

The schedule (which faults, which nodes, how long, how hard) is drawn from ``random.Random(seed)`` before
anything runs, so a seed names the same sequence of faults on every run; only the node that happens to lead
when a leader-targeted fault starts, and wall-clock timing, vary. Every start and heal lands in ``timeline``
for the report, on the same clock as the caller (``trio.current_time()``) minus ``origin``.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

import trio

from raftkv_harness.proxy import BlockMode, Link

HEAL_TIMEOUT = 30.0


class FaultKind(enum.StrEnum):
    KILL = "kill"
    PAUSE = "pause"
    PARTITION = "partition"
    POWERLOSS = "powerloss"
    NETDELAY = "netdelay"
    MEMBERSHIP = "membership"


PARTITION_VARIANTS = ("majority-minority", "isolate-leader", "one-way", "flapping")
NETDELAY_VARIANTS = ("delay-all", "delay-node", "loss-all")
MEMBERSHIP_VARIANTS = ("replace", "grow-shrink")  # a member's disk lost; a spare added, then removed


def parse_fault_kinds(text: str) -> list[FaultKind]:
    """``"kill,pause"`` -> kinds; an unknown name is an error that lists the known ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {kind.value: kind for kind in FaultKind}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown fault kinds {unknown}; choose from {','.join(known)}")
    return [known[name] for name in names]


class NetworkControl(Protocol):
    def partition(self, groups: Iterable[set[str]], mode: BlockMode = ...) -> None: ...
    def cut_one_way(self, src: str, dst: str, mode: BlockMode = ...) -> None: ...
    def set_delay(self, seconds: float, jitter: float = ..., links: Iterable[Link] | None = ...) -> None: ...
    def set_loss(self, probability: float, links: Iterable[Link] | None = ...) -> None: ...
    def links_touching(self, node: str) -> list[Link]: ...
    def heal(self) -> None: ...


class ClusterControl(Protocol):
    """What the nemesis needs from a cluster; LocalCluster provides it."""

    @property
    def nodes(self) -> list[str]: ...
    @property
    def mesh(self) -> NetworkControl: ...
    async def kill(self, node_id: str) -> None: ...
    async def restart(self, node_id: str) -> None: ...
    def pause(self, node_id: str) -> None: ...
    def resume(self, node_id: str) -> None: ...
    async def power_loss(self, node_id: str) -> int: ...
    async def leader(self) -> str | None: ...
    @property
    def spares(self) -> list[str]: ...
    async def add(self, node_id: str) -> None: ...
    async def remove(self, node_id: str) -> None: ...
    async def replace(self, node_id: str) -> None: ...


@dataclass(frozen=True)
class NemesisTiming:
    """Ranges (seconds) every fault's timing is drawn from."""

    quiet: tuple[float, float] = (1.0, 3.0)
    duration: tuple[float, float] = (2.0, 5.0)
    flap_period: tuple[float, float] = (0.2, 0.6)


@dataclass(frozen=True)
class Fault:
    """One planned fault. ``nodes`` are its targets in variant order (the minority side of a partition,
    ``(src, dst)`` of a one-way cut); with ``on_leader`` the first target becomes whoever leads when it starts.
    """

    kind: FaultKind
    variant: str
    nodes: tuple[str, ...]
    on_leader: bool
    quiet_before: float
    duration: float
    block_mode: BlockMode = BlockMode.DROP
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    flap_period: float = 0.0


@dataclass(frozen=True)
class NemesisEvent:
    time: float
    kind: str
    variant: str
    targets: tuple[str, ...]
    phase: Literal["start", "heal"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_faults(
    rng: random.Random, nodes: Sequence[str], kinds: Sequence[FaultKind], timing: NemesisTiming
) -> Iterator[Fault]:
    """An endless schedule drawn only from ``rng``: the same seed gives the same faults."""
    nodes = sorted(nodes)
    minority_max = max(1, (len(nodes) - 1) // 2)
    while True:
        kind = rng.choice(kinds)
        fault = Fault(
            kind,
            kind.value,
            (rng.choice(nodes),),
            on_leader=rng.random() < 0.5,
            quiet_before=rng.uniform(*timing.quiet),
            duration=rng.uniform(*timing.duration),
            block_mode=rng.choice(list(BlockMode)),
        )
        if kind is FaultKind.PARTITION:
            variant = rng.choice(PARTITION_VARIANTS)
            size = {"one-way": 2, "isolate-leader": 1}.get(variant) or rng.randint(1, minority_max)
            fault = replace(
                fault,
                variant=variant,
                nodes=tuple(rng.sample(nodes, size)),
                on_leader=variant == "isolate-leader",
                flap_period=rng.uniform(*timing.flap_period),
            )
        elif kind is FaultKind.MEMBERSHIP:
            fault = replace(fault, variant=rng.choice(MEMBERSHIP_VARIANTS))
        elif kind is FaultKind.NETDELAY:
            delay = rng.uniform(0.02, 0.2)
            variant = rng.choice(NETDELAY_VARIANTS)
            fault = replace(
                fault, variant=variant, delay=delay, jitter=delay / 2, loss=rng.uniform(0.01, 0.05)
            )
        yield fault


class Nemesis:
    """Runs a seeded fault schedule against ``cluster`` until cancelled (or ``faults`` have run)."""

    def __init__(
        self,
        cluster: ClusterControl,
        *,
        seed: int,
        kinds: Sequence[FaultKind] = tuple(FaultKind),
        timing: NemesisTiming | None = None,
        origin: float | None = None,
    ) -> None:
        self.cluster = cluster
        self.seed = seed
        self.kinds = list(kinds)
        self.timing = timing if timing is not None else NemesisTiming()
        self.origin = origin
        self.timeline: list[NemesisEvent] = []

    def schedule(self) -> Iterator[Fault]:
        return plan_faults(random.Random(self.seed), self.cluster.nodes, self.kinds, self.timing)

    async def run(self, *, faults: int | None = None) -> None:
        """Inject faults one after another; when cancelled, the fault in progress is healed first."""
        if self.origin is None:
            self.origin = trio.current_time()
        for fault in itertools.islice(self.schedule(), faults):
            await trio.sleep(fault.quiet_before)
            await self._inject(fault)

    def timeline_dicts(self) -> list[dict[str, Any]]:
        return [event.to_dict() for event in self.timeline]

    async def _inject(self, fault: Fault) -> None:
        targets = await self._resolve_targets(fault)
        self._record(fault, targets, "start")
        try:
            await self._break(fault, targets)
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(HEAL_TIMEOUT):
                await self._heal(fault, targets)
            self._record(fault, targets, "heal")

    async def _resolve_targets(self, fault: Fault) -> tuple[str, ...]:
        if fault.kind is FaultKind.MEMBERSHIP and fault.variant == "grow-shrink":
            return tuple(self.cluster.spares[:1]) or fault.nodes
        if not fault.on_leader:
            return fault.nodes
        leader = await self.cluster.leader()
        return fault.nodes if leader is None else (leader, *fault.nodes[1:])

    async def _break(self, fault: Fault, targets: tuple[str, ...]) -> None:
        """Start the fault and hold it for its duration."""
        cluster, mesh, target = self.cluster, self.cluster.mesh, targets[0]
        rest = set(cluster.nodes) - set(targets)
        match fault.kind, fault.variant:
            case FaultKind.KILL, _:
                await cluster.kill(target)
            case FaultKind.POWERLOSS, _:
                await cluster.power_loss(target)
            case FaultKind.PAUSE, _:
                cluster.pause(target)
            case FaultKind.PARTITION, "one-way":
                mesh.cut_one_way(targets[0], targets[1], fault.block_mode)
            case FaultKind.PARTITION, "flapping":
                await self._flap(fault, [set(targets), rest])
                return
            case FaultKind.PARTITION, _:
                mesh.partition([set(targets), rest], fault.block_mode)
            case FaultKind.NETDELAY, "delay-all":
                mesh.set_delay(fault.delay, fault.jitter)
            case FaultKind.NETDELAY, "delay-node":
                mesh.set_delay(fault.delay, fault.jitter, mesh.links_touching(target))
            case FaultKind.NETDELAY, "loss-all":
                mesh.set_loss(fault.loss)
            case FaultKind.MEMBERSHIP, "replace":
                await cluster.replace(target)
            case FaultKind.MEMBERSHIP, "grow-shrink":
                await cluster.add(target)
        await trio.sleep(fault.duration)

    async def _flap(self, fault: Fault, groups: list[set[str]]) -> None:
        """Cut and heal the same split every ``flap_period`` until the fault's duration is spent."""
        with trio.move_on_after(fault.duration):
            while True:
                self.cluster.mesh.partition(groups, fault.block_mode)
                await trio.sleep(fault.flap_period)
                self.cluster.mesh.heal()
                await trio.sleep(fault.flap_period)

    async def _heal(self, fault: Fault, targets: tuple[str, ...]) -> None:
        if fault.kind is FaultKind.MEMBERSHIP:
            await self._settle_membership(fault, targets[0])
        elif fault.kind in (FaultKind.KILL, FaultKind.POWERLOSS):
            await self.cluster.restart(targets[0])
        elif fault.kind is FaultKind.PAUSE:
            self.cluster.resume(targets[0])
        else:
            self.cluster.mesh.heal()

    async def _settle_membership(self, fault: Fault, target: str) -> None:
        """Back to the membership the run started with: a replaced member is one again (if the fault was cut
        short), an added spare leaves."""
        members = self.cluster.nodes
        if fault.variant == "replace" and target not in members:
            await self.cluster.add(target)
        elif fault.variant == "grow-shrink" and target in members:
            await self.cluster.remove(target)

    def _record(self, fault: Fault, targets: tuple[str, ...], phase: Literal["start", "heal"]) -> None:
        origin = self.origin if self.origin is not None else 0.0
        event = NemesisEvent(trio.current_time() - origin, fault.kind.value, fault.variant, targets, phase)
        self.timeline.append(event)
