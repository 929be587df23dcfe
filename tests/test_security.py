"""What a node refuses, in process: Raft messages without the cluster token (or forged in other ways), client
calls without the client token when it has one, and values and bodies over their limits -- each refused with a
JSON error while the node's Raft state stays exactly as it was."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from quart_trio import QuartTrio

from raftkv import wire
from raftkv.api.app import create_app
from raftkv.config import NodeConfig
from raftkv.kv import KVStore
from raftkv.node import RaftNode
from raftkv.raft.types import AppendEntries, Entry, RequestVote, TimeoutNow
from raftkv.storage import MemoryStorage
from raftkv.transport import Transport

TOKEN = "the-cluster-token"
PEERS = {"n2": "http://n2.invalid", "n3": "http://n3.invalid"}
FORGED = AppendEntries(
    term=99,
    src="n2",
    dst="n1",
    prev_index=0,
    prev_term=0,
    entries=(Entry(1, 99, b'{"op":"put","key":"default","value":"HACKED"}'),),
    commit=1,
)


def make_node(**settings: Any) -> RaftNode[KVStore]:
    config = NodeConfig(id="n1", **{"peers": PEERS, "token": TOKEN, **settings})
    return RaftNode(config, MemoryStorage(), Transport(1.0), random.Random(0), KVStore)


def raft_state(node: RaftNode[KVStore]) -> tuple[object, ...]:
    core = node.core
    return core.term, core.vote, core.role, core.leader_id, core.log.last_index, core.log.committed


ENDPOINTS = {  # how each Raft endpoint carries one message
    wire.RAFT_STREAM_PATH: (wire.dump_raft_frames, wire.RAFT_STREAM_TYPE),
    "/raft/messages": (wire.dump_raft_batch, "application/json"),
    "/raft/append-entries": (lambda messages: wire.dump_raft_message(messages[0]), "application/json"),
}
endpoints = pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))


async def post_raft(
    app: QuartTrio, message: AppendEntries, headers: dict[str, str], endpoint: str = wire.RAFT_STREAM_PATH
) -> tuple[int, Any]:
    dump, content_type = ENDPOINTS[endpoint]
    response = await app.test_client().post(
        endpoint, data=dump([message]), headers={"Content-Type": content_type, **headers}
    )
    return response.status_code, await response.get_json()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"bearer {TOKEN}", ""],
    ids=["none", "wrong", "basic", "longer", "lowercase", "empty"],
)
@endpoints
async def test_raft_messages_need_the_cluster_token(authorization: str | None, endpoint: str) -> None:
    node = make_node()
    before = raft_state(node)
    headers = {"Authorization": authorization} if authorization else {}
    status, body = await post_raft(create_app(node), FORGED, headers, endpoint)
    assert status == 401 and "cluster token" in body["error"]
    assert raft_state(node) == before


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (AppendEntries(99, "n2", "n9", 0, 0, FORGED.entries, 1), "message for 'n9'"),
        (AppendEntries(99, "intruder", "n1", 0, 0, FORGED.entries, 1), "unknown node 'intruder'"),
    ],
    ids=["wrong-dst", "unknown-src"],
)
@endpoints
async def test_messages_for_another_node_or_from_a_stranger_are_refused(
    message: AppendEntries, reason: str, endpoint: str
) -> None:
    node = make_node()
    before = raft_state(node)
    status, body = await post_raft(create_app(node), message, {"Authorization": f"Bearer {TOKEN}"}, endpoint)
    assert status == 400 and reason in body["error"]
    assert raft_state(node) == before


async def test_a_node_without_a_token_takes_no_raft_messages_unless_insecure() -> None:
    closed = make_node(peers={}, token=None)
    status, body = await post_raft(create_app(closed), FORGED, {})
    assert status == 401 and "no cluster token" in body["error"]
    insecure = make_node(token=None, insecure=True)
    status, _ = await post_raft(create_app(insecure), FORGED, {})
    assert status == 202
    assert insecure.core.term == 99  # what --insecure means: anyone can do this
    assert insecure.status()["insecure"] is True and closed.status()["insecure"] is False


async def test_the_client_token_guards_the_client_api_but_not_health_or_docs() -> None:
    app = create_app(make_node(client_token="client-secret"))
    client = app.test_client()
    for path in ("/kv/k?consistency=stale", "/?consistency=stale", "/status", "/metrics"):
        refused = await client.get(path)
        assert refused.status_code == 401, path
        allowed = await client.get(path, headers={"Authorization": "Bearer client-secret"})
        assert allowed.status_code in (200, 404), path
    for path in ("/healthz", "/openapi.json", "/docs"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/readyz")).status_code == 503  # open, though not ready: no leader yet


@pytest.fixture
async def leader() -> AsyncIterator[RaftNode[KVStore]]:
    """A running one-node cluster, its own leader within a few milliseconds."""
    node = make_node(peers={}, tick_ms=1, election_ticks=2, heartbeat_ticks=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with trio.fail_after(5):
            while not node.is_leader or node.core.log.committed < 1:
                await node.changed()
        yield node
        nursery.cancel_scope.cancel()


async def test_a_value_over_the_limit_is_refused_before_anything_is_proposed(
    leader: RaftNode[KVStore],
) -> None:
    client = create_app(leader).test_client()
    limit = leader.config.max_value_bytes
    last_index = leader.core.log.last_index
    too_large = json.dumps(
        {"value": "x" * (limit - 1)}
    )  # the JSON string is two quotes longer than the limit
    response = await client.put("/kv/big", data=too_large, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "at most 1048576" in (await response.get_json())["error"]
    assert leader.core.log.last_index == last_index
    just_under = json.dumps({"value": "x" * (limit - 2)})
    response = await client.put("/kv/big", data=just_under, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert leader.core.log.last_index == last_index + 1


async def test_a_body_over_the_limit_is_refused_unread(leader: RaftNode[KVStore]) -> None:
    client = create_app(leader).test_client()
    last_index = leader.core.log.last_index
    body = b'{"value": "' + b"x" * (leader.config.max_request_bytes + 1) + b'"}'
    response = await client.put("/kv/big", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "error" in await response.get_json()
    assert leader.core.log.last_index == last_index


async def test_each_rpc_endpoint_takes_its_own_kinds_only() -> None:
    """``/raft/append-entries`` takes an AppendEntries; a TimeoutNow sent there is a 400 and changes nothing."""
    node = make_node()
    client = create_app(node).test_client()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    before = raft_state(node)
    wrong = await client.post(
        "/raft/append-entries", data=wire.dump_raft_message(TimeoutNow(1, "n2", "n1")), headers=headers
    )
    assert wrong.status_code == 400 and raft_state(node) == before
    vote = RequestVote(5, "n2", "n1", last_log_index=0, last_log_term=0)
    taken = await client.post("/raft/request-vote", data=wire.dump_raft_message(vote), headers=headers)
    assert taken.status_code == 202 and node.core.term == 5  # delivered: a higher term is adopted
