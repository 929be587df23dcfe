"""Membership changes on real node processes: grow, shrink and replace under a running write load, a joining node
caught up through a streamed snapshot, leadership transfer, a leader handing over on SIGTERM, nodes
stopped alone or all together, and a backup taken under load restored into a new cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from raftkv_harness.cluster import HOST, LocalCluster, free_ports
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


def raftkv(*args: str, token_file: Path | None = None) -> str:
    """Run a ``raftkv`` command (with the cluster token, when given); its standard output."""
    token = ["--token-file", str(token_file)] if token_file else []
    command = [sys.executable, "-m", "raftkv", *args, *token]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_commands_list_members_transfer_leadership_and_promote(cluster: LocalCluster) -> None:
    token_file = cluster.workdir / "token"
    endpoint = ["--endpoints", cluster.client_url(cluster.nodes[0])]
    listed = json.loads(
        await trio.to_thread.run_sync(lambda: raftkv("member", "list", *endpoint, token_file=token_file))
    )
    assert [m["id"] for m in listed["members"]] == ["n1", "n2", "n3"] and listed["leader"]
    old = listed["leader"]["id"]
    target = next(n for n in cluster.nodes if n != old)
    moved = json.loads(
        await trio.to_thread.run_sync(
            lambda: raftkv("leader", "transfer", target, *endpoint, token_file=token_file)
        )
    )
    assert moved["leader"]["id"] == target
    assert await cluster.wait_for_leader() == target


async def test_a_leader_stopped_with_sigterm_hands_over_first(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    leader = await cluster.wait_for_leader()
    await http.put(cluster.client_url(leader) + "/kv/before", json={"value": 1})
    term = (await http.get(cluster.client_url(leader) + "/status")).json()["term"]
    process = cluster.node(leader).process
    assert process is not None
    process.terminate()
    with trio.fail_after(15):
        assert await process.wait() == 0
    assert "handed leadership to" in cluster.node(leader).log_path.read_text()
    new = await cluster.wait_for_leader(other_than=leader)
    status = (await http.get(cluster.client_url(new) + "/status")).json()
    assert status["term"] == term + 1  # one election, started at once by the handover (no timeouts lost)


async def test_a_node_stopped_alone_or_with_all_others_does_not_wait_out_its_timeouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM, first to one follower, then to the other two nodes together. A node ends the peers' streams into
    it and closes their connections without reading on, although the peers still running never end those
    bodies; and a leader whose successor is stopping too stops once the transfer is over. So no node waits out
    its graceful timeout (the request timeout) nor a body's read timeout, both 60 s here."""
    monkeypatch.setenv("RAFTKV_REQUEST_TIMEOUT", "60")
    monkeypatch.setenv("RAFTKV_READ_TIMEOUT", "60")
    async with LocalCluster(tmp_path, size=3) as cluster:
        leader = await cluster.wait_for_leader(timeout=20)
        follower = next(node_id for node_id in cluster.nodes if node_id != leader)
        for group in ([follower], [node_id for node_id in cluster.nodes if node_id != follower]):
            processes = [cluster.node(node_id).process for node_id in group]
            for process in processes:
                assert process is not None
                process.terminate()
            with trio.fail_after(30):
                for process in processes:
                    assert process is not None and await process.wait() == 0


async def test_a_backup_taken_under_load_restores_into_a_new_cluster(
    cluster: LocalCluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    leader = cluster.client_url(await cluster.wait_for_leader())
    for i in range(60):  # more than a snapshot's worth: the backup is not just the log
        assert (await http.put(f"{leader}/kv/fixed-{i}", json={"value": i})).status_code == 200
    counter_stop = trio.Event()

    async def count() -> None:  # a write load while the backup is taken: one key counting up
        n = 0
        while not counter_stop.is_set():
            n += 1
            await http.put(f"{leader}/kv/counter", json={"value": n})

    token_file = cluster.workdir / "token"
    backup = tmp_path / "cluster.backup"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        await trio.sleep(0.5)
        saved = await trio.to_thread.run_sync(
            lambda: raftkv("snapshot", "save", str(backup), "--endpoints", leader, token_file=token_file)
        )
        counter_stop.set()
    headers = json.loads(saved)
    assert int(headers["x-raft-snapshot-index"]) > 60
    (port,) = free_ports(1)
    restored_dir = tmp_path / "restored"
    restored_url = f"http://{HOST}:{port}"
    await trio.to_thread.run_sync(
        lambda: raftkv(
            "restore",
            str(backup),
            "--data-dir",
            str(restored_dir),
            "--id",
            "r1",
            "--url",
            restored_url,
        )
    )
    command = [sys.executable, "-m", "raftkv", "serve", "--id", "r1", "--listen", f"{HOST}:{port}"]
    command += ["--data-dir", str(restored_dir), "--token-file", str(token_file)]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(trio.run_process, command)
        try:
            with trio.fail_after(20):
                while True:
                    try:
                        if (await http.get(f"{restored_url}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.1)
            listing = (await http.get(f"{restored_url}/kv", params={"prefix": "fixed-"})).json()
            assert {item["key"]: item["value"] for item in listing["items"]} == {
                f"fixed-{i}": i for i in range(60)
            }
            counter = (await http.get(f"{restored_url}/kv/counter")).json()
            original = (await http.get(f"{leader}/kv/counter")).json()
            assert (
                0 < counter["value"] <= original["value"]
            )  # the state as of the backup: a prefix of the history
            members = (await http.get(f"{restored_url}/status")).json()["members"]
            assert [m["id"] for m in members] == ["r1"]
            assert (await http.put(f"{restored_url}/kv/after", json={"value": "restored"})).status_code == 200
        finally:
            process.terminate()
