"""Real node processes on loopback: the seed's curl flow, forwarding and redirects, kill -9, pause, partition.

Peers reach each other through the harness's TCP proxies (raftkv_harness), so partitions cut real traffic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio

from raftkv_harness.cluster import LocalCluster

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path, size=3) as c:
        await c.wait_for_leader(timeout=20)
        yield c


async def put(http: httpx.AsyncClient, url: str, key: str, value: object) -> httpx.Response:
    return await http.put(f"{url}/kv/{key}", json={"value": value})


async def retry_put(http: httpx.AsyncClient, url: str, key: str, value: object, timeout: float = 10) -> float:
    """PUT until it succeeds (a leader change in progress answers 503); returns the seconds it took."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while True:
            try:
                if (await put(http, url, key, value)).status_code == 200:
                    return trio.current_time() - start
            except httpx.HTTPError:
                pass
            await trio.sleep(0.05)


async def test_seed_curl_flow_on_every_node(cluster: LocalCluster, http: httpx.AsyncClient) -> None:
    for i, node in enumerate(cluster.nodes):
        url = cluster.client_url(node)
        # Exactly what `curl -X POST localhost:8080/ -d '{"value": "test"}'` sends.
        answer = await http.post(
            url + "/",
            content=b'{"value": "test%d"}' % i,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"value": f"test{i}"}
        for other in cluster.nodes:  # linearizable reads: every node sees the write at once
            assert (await http.get(cluster.client_url(other) + "/")).json() == {"value": f"test{i}"}


async def test_keys_may_hold_slashes_spaces_and_any_unicode(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    url = cluster.client_url(cluster.nodes[0])
    for key in ["a/b", "a/b/", "/lead", "two words", "é/\U0001f600"]:
        assert (await put(http, url, quote(key, safe="/"), key)).status_code == 200, key
        answer = await http.get(f"{url}/kv/{quote(key, safe='/')}")
        assert answer.status_code == 200 and answer.json()["value"] == key, (key, answer.text)


async def test_follower_forwards_or_redirects_writes(cluster: LocalCluster, http: httpx.AsyncClient) -> None:
    leader = await cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes if n != leader)
    url = cluster.client_url(follower)

    forwarded = await http.put(f"{url}/kv/color", json={"value": "blue"}, headers={"X-Raft-Trace": "1"})
    assert forwarded.status_code == 200 and forwarded.json()["value"] == "blue"
    assert forwarded.headers["X-Raft-Leader"].split()[0] == leader
    stages = dict(item.split("=") for item in forwarded.headers["X-Raft-Trace"].split(","))
    assert [  # on the peer channel, applied here
        stage for stage in stages if stage in ("forwarded", "accepted", "committed", "applied")
    ] == ["forwarded", "accepted", "committed", "applied"]
    assert float(stages["forwarded"]) <= float(stages["applied"]) <= float(stages["answered"])

    redirected = await http.put(f"{url}/kv/color?redirect=true", json={"value": "red"})
    assert redirected.status_code == 307
    location = redirected.headers["Location"]
    assert location.endswith("/kv/color?redirect=true") and redirected.json()["error"] == "not the leader"
    # The Location names the leader as its peers reach it (through the harness proxy); follow it.
    followed = await http.put(location, json={"value": "red"})
    assert followed.status_code == 200
    stale = await http.get(f"{cluster.client_url(leader)}/kv/color?consistency=stale")
    assert stale.json()["value"] == "red"


async def test_leader_kill_loses_no_acknowledged_write(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    old = await cluster.wait_for_leader()
    acknowledged = {}
    for i in range(20):
        answer = await put(http, cluster.client_url(old), f"k{i}", i)
        assert answer.status_code == 200
        acknowledged[f"k{i}"] = i
    await cluster.kill(old)
    survivor = next(n for n in cluster.nodes if n != old)
    took = await retry_put(http, cluster.client_url(survivor), "after", "kill")
    new = await cluster.wait_for_leader(other_than=old)
    assert new != old
    print(f"a write succeeded {took:.2f}s after kill -9 of the leader")
    for key, value in acknowledged.items():
        answer = await http.get(f"{cluster.client_url(survivor)}/kv/{key}")
        assert answer.json()["value"] == value

    await cluster.restart(old)  # it catches up from the new leader
    with trio.fail_after(15):
        while True:
            answer = await http.get(f"{cluster.client_url(old)}/kv/after?consistency=stale")
            if answer.status_code == 200 and answer.json()["value"] == "kill":
                break
            await trio.sleep(0.1)


async def test_paused_follower_does_not_block_writes(cluster: LocalCluster, http: httpx.AsyncClient) -> None:
    leader = await cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.pause(follower)
    try:
        for i in range(10):
            assert (await put(http, cluster.client_url(leader), f"p{i}", i)).status_code == 200
    finally:
        cluster.resume(follower)
    with trio.fail_after(15):
        while (await http.get(f"{cluster.client_url(follower)}/kv/p9?consistency=stale")).status_code != 200:
            await trio.sleep(0.1)


async def test_isolated_leader_is_replaced_and_rejoins(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    old = await cluster.wait_for_leader()
    cluster.mesh.isolate(old)
    majority = [n for n in cluster.nodes if n != old]
    await retry_put(http, cluster.client_url(majority[0]), "split", "majority", timeout=15)
    # The cut-off leader cannot commit: its write answers 503 instead of hanging or succeeding.
    minority_write = await put(http, cluster.client_url(old), "split", "minority")
    assert minority_write.status_code == 503 and "error" in minority_write.json()
    cluster.mesh.heal()
    with trio.fail_after(15):
        while True:
            answer = await http.get(f"{cluster.client_url(old)}/kv/split")
            if answer.status_code == 200:
                assert answer.json()["value"] == "majority"
                break
            await trio.sleep(0.1)


async def last_log_index(cluster: LocalCluster, node: str) -> int:
    status = await cluster.status(node)
    assert status is not None
    return int(status["last_log_index"])


async def test_sigterm_answers_the_request_in_flight_then_exits(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    leader = await cluster.wait_for_leader()
    cluster.mesh.isolate(leader)  # its write cannot commit: it stays in flight until the request deadline
    before = await last_log_index(cluster, leader)
    answers: list[httpx.Response] = []

    async def write() -> None:
        answers.append(await put(http, cluster.client_url(leader), "in-flight", 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        with trio.fail_after(5):  # the proposal reached the leader's log: the request is in flight
            while await last_log_index(cluster, leader) == before:
                await trio.sleep(0.01)  # nothing to wait on from outside the process: poll /status
        process = cluster.node(leader).process
        assert process is not None
        process.terminate()
    assert answers[0].status_code == 503 and "error" in answers[0].json()  # answered, not cut off
    with trio.fail_after(10):
        assert await process.wait() == 0
