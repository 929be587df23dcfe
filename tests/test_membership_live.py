"""Membership changes on real node processes: grow, shrink and replace under a running write load, a joining node
caught up through a streamed snapshot, leadership transfer, a leader handing over on SIGTERM, and a backup taken
under load restored into a new cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from raftkv_harness.cluster import LocalCluster
from raftkv_harness.linearizability import check
from raftkv_harness.workload import Workload, WorkloadConfig, lost_acknowledged_writes

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path, size=3, spares=2, node_args=("--snapshot-entries=50",)) as c:
        await c.wait_for_leader(timeout=20)
        yield c


async def members(cluster: LocalCluster) -> dict[str, bool]:
    answer = await cluster.cluster_call("GET", "/cluster/members")
    assert answer.status_code == 200, answer.text
    return {member["id"]: member["voter"] for member in answer.json()["members"]}


@pytest.mark.slow
async def test_grow_shrink_and_replace_under_load_stay_linearizable(cluster: LocalCluster) -> None:
    urls = [cluster.client_url(node_id) for node_id in (*cluster.nodes, *cluster.spares)]
    workload = Workload(urls, WorkloadConfig(clients=6, keys=8), seed=3, origin=trio.current_time())
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(workload.run, stop)
        await trio.sleep(1)
        await cluster.add(
            "n4"
        )  # 3 -> 5, each new node catching up (through a snapshot: 50 entries a snapshot)
        await cluster.add("n5")
        assert await members(cluster) == dict.fromkeys(["n1", "n2", "n3", "n4", "n5"], True)
        leader = await cluster.wait_for_leader()
        await cluster.remove(leader)  # 5 -> 3, starting with the leader itself
        await cluster.remove(next(n for n in cluster.nodes if n != "n4"))
        assert len(await members(cluster)) == 3
        leader = await cluster.wait_for_leader()
        victim = next(n for n in cluster.nodes if n != leader)
        await cluster.kill(victim)  # its disk is lost: replace it
        await cluster.replace(victim)
        assert set(await members(cluster)) == set(cluster.nodes)
        await trio.sleep(1)
        stop.set()
    final = await workload.final_reads()
    result = check(workload.history)
    assert result.verdict == "linearizable", result.explanation
    assert not lost_acknowledged_writes(workload.history, final)
    assert workload.counts.ok > 100  # the load kept going through every change
