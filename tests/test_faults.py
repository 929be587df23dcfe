"""The dashboard's fault buttons: ``PUT /cluster/partition`` on a node (in process), and the control API of the
supervisor ``raftkv cluster`` runs (real processes): kill, restart, pause, resume, partition, heal, add."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from pydantic import SecretStr

from raftkv.api.app import create_app
from raftkv.config import NodeConfig
from raftkv.kv import KVStore
from raftkv.launch import wait_for_leader
from raftkv.node import RaftNode
from raftkv.raft.types import RequestVote
from raftkv.storage import MemoryStorage
from raftkv.transport import Transport
from raftkv_harness.processes import CommandCluster, leader_url, raftkv_cluster

TOKEN = "the-cluster-token"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def make_node(**settings: Any) -> RaftNode[KVStore]:
    peers = {"n2": "http://n2.invalid", "n3": "http://n3.invalid"}
    config = NodeConfig(id="n1", peers=peers, token=SecretStr(TOKEN), **settings)
    return RaftNode(config, MemoryStorage(), Transport(1.0), random.Random(0), KVStore)


async def put_partition(node: RaftNode[KVStore], body: object, headers: dict[str, str]) -> tuple[int, Any]:
    client = create_app(node).test_client()
    response = await client.put("/cluster/partition", data=json.dumps(body), headers=headers)
    return response.status_code, await response.get_json()


async def test_a_partition_needs_the_flag_and_the_cluster_token() -> None:
    status, body = await put_partition(make_node(), {"peers": ["n2"]}, AUTHORIZED)
    assert status == 403 and "--allow-fault-injection" in body["error"]
    node = make_node(allow_fault_injection=True)
    status, _ = await put_partition(node, {"peers": ["n2"]}, {"Content-Type": "application/json"})
    assert status == 401 and node.cut_off == frozenset()


@pytest.mark.parametrize("body", [{}, {"peers": "n2"}, {"peers": [""]}, {"peers": ["n2"], "more": 1}])
async def test_a_bad_partition_is_a_400(body: object) -> None:
    node = make_node(allow_fault_injection=True)
    status, answer = await put_partition(node, body, AUTHORIZED)
    assert status == 400 and "error" in answer and node.cut_off == frozenset()


async def test_a_partitioned_node_drops_the_messages_of_the_peers_named_until_healed() -> None:
    node = make_node(allow_fault_injection=True)
    status, answer = await put_partition(node, {"peers": ["n2"]}, AUTHORIZED)
    assert (status, answer) == (200, {"peers": ["n2"]})
    vote = RequestVote(term=5, src="n2", dst="n1", last_log_index=9, last_log_term=4)
    node.deliver(vote)
    assert node.core.term == 0 and not node.traffic.totals
    assert await put_partition(node, {"peers": []}, AUTHORIZED) == (200, {"peers": []})
    node.deliver(vote)
    assert node.core.term == 5 and node.traffic.totals["received", "n2", "RequestVote"] == 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandCluster]:
    with raftkv_cluster(Path(tmp_path_factory.mktemp("cluster"))) as running:
        yield running


def control(cluster: CommandCluster, method: str, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or cluster.token}"}
    return httpx.request(method, f"{cluster.control}{path}", headers=headers, timeout=30, trust_env=False)


def states(answer: httpx.Response) -> dict[str, tuple[str, bool]]:
    assert answer.status_code == 200, answer.text
    return {node["id"]: (node["state"], node["partitioned"]) for node in answer.json()["nodes"]}


def new_leader(urls: list[str], old: str) -> str:
    return trio.run(lambda: wait_for_leader(urls, 30, other_than=old))[0]


def test_the_control_api_needs_the_cluster_token(cluster: CommandCluster) -> None:
    answer = control(cluster, "GET", "/nodes", token="wrong")
    assert answer.status_code == 401 and "error" in answer.json()
    assert states(control(cluster, "GET", "/nodes")) == {n: ("running", False) for n in ("n1", "n2", "n3")}
    assert control(cluster, "POST", "/nodes/n9/kill").status_code == 404
    assert control(cluster, "POST", "/nodes/n1/explode").status_code == 404


def test_a_partitioned_leader_is_replaced_and_heals(cluster: CommandCluster) -> None:
    old = leader_url(cluster.urls)
    old_id = f"n{cluster.urls.index(old) + 1}"
    assert states(control(cluster, "POST", f"/nodes/{old_id}/partition"))[old_id] == ("running", True)
    assert new_leader(cluster.urls, old_id) != old_id
    assert states(control(cluster, "POST", f"/nodes/{old_id}/heal"))[old_id] == ("running", False)


def knows_a_leader(url: str) -> None:
    """Return once the node at ``url`` names a leader (it has rejoined, or joined, the cluster)."""
    trio.run(lambda: wait_for_leader([url], 60))


def test_pause_resume_kill_and_restart(cluster: CommandCluster) -> None:
    assert states(control(cluster, "POST", "/nodes/n3/pause"))["n3"] == ("paused", False)
    assert states(control(cluster, "POST", "/nodes/n3/resume"))["n3"] == ("running", False)
    assert states(control(cluster, "POST", "/nodes/n3/kill"))["n3"] == ("killed", False)
    assert control(cluster, "POST", "/nodes/n3/pause").status_code == 409
    assert states(control(cluster, "POST", "/nodes/n3/restart"))["n3"] == ("running", False)
    knows_a_leader(cluster.urls[2])


def test_a_new_member_joins(cluster: CommandCluster) -> None:
    answer = control(cluster, "POST", "/nodes")
    assert states(answer)["n4"] == ("running", False)
    (joined,) = [node["url"] for node in answer.json()["nodes"] if node["id"] == "n4"]
    knows_a_leader(joined)  # the leader replicates to it: its configuration names it
    headers = {"Authorization": f"Bearer {cluster.token}"}
    leader = leader_url(cluster.urls)
    members = httpx.get(f"{leader}/cluster/members", headers=headers, timeout=30, trust_env=False)
    assert "n4" in {member["id"] for member in members.json()["members"]}
