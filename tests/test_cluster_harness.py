"""The fault harness: the nemesis against a recording fake cluster (virtual time), and LocalCluster against real
node processes (skipped until the node's command line exists)."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterable
from pathlib import Path

import pytest
import trio
import trio.testing

from raftkv_harness.cluster import LocalCluster
from raftkv_harness.nemesis import (
    MEMBERSHIP_VARIANTS,
    NETDELAY_VARIANTS,
    PARTITION_VARIANTS,
    ClusterControl,
    Fault,
    FaultKind,
    Nemesis,
    parse_fault_kinds,
)
from raftkv_harness.proxy import BlockMode, Link

NODES = ["n1", "n2", "n3", "n4", "n5"]


class FakeMesh:
    """Remembers whether any network fault is in force."""

    def __init__(self) -> None:
        self.faulty = False

    def partition(self, groups: Iterable[set[str]], mode: BlockMode = BlockMode.DROP) -> None:
        self.faulty = True

    def cut_one_way(self, src: str, dst: str, mode: BlockMode = BlockMode.DROP) -> None:
        self.faulty = True

    def set_delay(self, seconds: float, jitter: float = 0.0, links: Iterable[Link] | None = None) -> None:
        self.faulty = True

    def set_loss(self, probability: float, links: Iterable[Link] | None = None) -> None:
        self.faulty = True

    def links_touching(self, node: str) -> list[Link]:
        return [(node, other) for other in NODES if other != node]

    def heal(self) -> None:
        self.faulty = False


class FakeCluster:
    """Tracks which nodes are down or paused, and logs every call the nemesis makes."""

    def __init__(self) -> None:
        self.mesh = FakeMesh()
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.first_kill = trio.Event()
        self.members = set(NODES)

    @property
    def nodes(self) -> list[str]:
        return sorted(self.members)

    @property
    def spares(self) -> list[str]:
        return sorted({"n6", "n7"} - self.members)

    async def add(self, node_id: str) -> None:
        self.calls.append(("add", node_id))
        await trio.sleep(1.0)
        self.members.add(node_id)

    async def remove(self, node_id: str) -> None:
        self.calls.append(("remove", node_id))
        self.members.discard(node_id)

    async def replace(self, node_id: str) -> None:
        await self.remove(node_id)
        await self.add(node_id)

    async def kill(self, node_id: str) -> None:
        self.calls.append(("kill", node_id))
        self.down.add(node_id)
        self.first_kill.set()

    async def power_loss(self, node_id: str) -> int:
        self.calls.append(("power_loss", node_id))
        self.down.add(node_id)
        return -9

    async def restart(self, node_id: str) -> None:
        self.calls.append(("restart", node_id))
        await trio.sleep(1.0)  # a restart takes time, so cancellation can land in the middle of a heal
        self.down.discard(node_id)

    def pause(self, node_id: str) -> None:
        self.calls.append(("pause", node_id))
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        self.calls.append(("resume", node_id))
        self.paused.discard(node_id)

    async def leader(self) -> str | None:
        return "n4"

    @property
    def healthy(self) -> bool:
        return not (self.down or self.paused or self.mesh.faulty) and self.members == set(NODES)


def test_the_schedule_is_a_function_of_the_seed() -> None:
    def first_faults(seed: int, kinds: list[FaultKind]) -> list[Fault]:
        return list(itertools.islice(Nemesis(FakeCluster(), seed=seed, kinds=kinds).schedule(), 40))

    every_kind = list(FaultKind)
    assert first_faults(1, every_kind) == first_faults(1, every_kind)
    assert first_faults(1, every_kind) != first_faults(2, every_kind)
    assert {fault.kind for fault in first_faults(3, every_kind)} == set(FaultKind)
    only = parse_fault_kinds("pause, netdelay")
    assert {fault.kind for fault in first_faults(3, only)} == {FaultKind.PAUSE, FaultKind.NETDELAY}


def test_unknown_fault_kinds_are_rejected_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="kill,pause,partition,powerloss,netdelay,membership"):
        parse_fault_kinds("kill,meteor")


async def test_every_fault_is_healed_and_recorded(autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    nemesis = Nemesis(cluster, seed=6)
    await nemesis.run(faults=40)
    assert cluster.healthy
    phases = [event.phase for event in nemesis.timeline]
    assert phases == ["start", "heal"] * 40
    variants = {(event.kind, event.variant) for event in nemesis.timeline}
    expected = 3 + len(PARTITION_VARIANTS) + len(NETDELAY_VARIANTS) + len(MEMBERSHIP_VARIANTS)
    assert len(variants) == expected  # seed 6 draws every variant
    times = [event.time for event in nemesis.timeline]
    assert times == sorted(times) and times[0] >= 1.0  # a quiet period comes first
    for broke, healed in itertools.pairwise(cluster.calls):
        if broke[0] in ("kill", "power_loss"):
            assert healed == ("restart", broke[1])
    isolations = [event for event in nemesis.timeline if event.variant == "isolate-leader"]
    assert isolations and all(event.targets == ("n4",) for event in isolations)


async def test_cancelling_the_nemesis_heals_the_fault_in_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = FakeCluster()
    nemesis = Nemesis(cluster, seed=5, kinds=[FaultKind.KILL])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(nemesis.run)
        await cluster.first_kill.wait()
        nursery.cancel_scope.cancel()
    assert cluster.healthy
    assert [event.phase for event in nemesis.timeline] == ["start", "heal"]


def test_local_cluster_meets_the_nemesis_protocol(tmp_path: Path) -> None:
    cluster: ClusterControl = LocalCluster(tmp_path)
    assert cluster.nodes == ["n1", "n2", "n3"]


@pytest.mark.skipif(
    importlib.util.find_spec("raftkv.cli") is None, reason="the node (raftkv.cli) is not written yet"
)
async def test_real_cluster_elects_a_new_leader_when_the_leader_is_killed(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, size=3) as cluster:
        first = await cluster.wait_for_leader(timeout=20)
        await cluster.kill(first)
        second = await cluster.wait_for_leader(timeout=20, other_than=first)
        assert second != first
        processes = [cluster.node(node_id).process for node_id in cluster.nodes]
    assert all(process is not None and process.returncode is not None for process in processes)
