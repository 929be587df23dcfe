"""GET /metrics: Prometheus text that its own parser reads, every metric the README lists, and counters and
histograms that move under load on a real 3-node cluster (writes, follower reads, a backup, a leadership
transfer, a killed follower)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from raftkv.metrics import CONTENT_TYPE, NodeMetrics, NodeState
from raftkv.raft.types import Role
from raftkv_harness.cluster import LocalCluster

METRICS = {
    "raftkv_term",
    "raftkv_role",
    "raftkv_leader_changes_total",
    "raftkv_commit_index",
    "raftkv_applied_index",
    "raftkv_last_log_index",
    "raftkv_follower_lag_entries",
    "raftkv_proposals_total",
    "raftkv_storage_fsync_duration_seconds",
    "raftkv_proposal_commit_duration_seconds",
    "raftkv_http_request_duration_seconds",
    "raftkv_snapshot_size_bytes",
    "raftkv_snapshot_duration_seconds",
    "raftkv_peer_transport_errors_total",
    "raftkv_peer_queue_depth",
    "raftkv_read_index_rounds_total",
}
WRITES = 30
SNAPSHOT_ENTRIES = 20  # fewer than the writes, so the leader saves a snapshot


class Scrape:
    """One node's metrics, parsed: the names of its families, and the value of each sample."""

    def __init__(self, text: str) -> None:
        families = list(text_string_to_metric_families(text))
        # The parser names a counter's family without its _total suffix.
        self.names = {f"{f.name}_total" if f.type == "counter" else f.name for f in families}
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in families
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
        wanted = set(labels.items())
        return sum(v for (n, have), v in self.samples.items() if n == name and wanted <= have)


async def scrape(http: httpx.AsyncClient, url: str) -> Scrape:
    answer = await http.get(url + "/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    return Scrape(answer.text)


def test_every_metric_is_exported_from_a_registry_of_its_own() -> None:
    """Two nodes in one process keep apart: each registry holds its own series."""
    first, second = NodeMetrics(), NodeMetrics()
    for metrics in (first, second):
        metrics.observe_state(lambda: NodeState(3, Role.LEADER, 7, 6, 8, {"n2": 1}))
        metrics.observe_queues(lambda: {"n2": 4})
    first.proposals.labels(outcome="committed").inc()
    ours, theirs = Scrape(first.exposition().decode()), Scrape(second.exposition().decode())
    assert ours.names >= METRICS and theirs.names >= METRICS
    assert ours.value("raftkv_proposals_total", outcome="committed") == 1
    assert theirs.value("raftkv_proposals_total", outcome="committed") == 0
    assert ours.value("raftkv_role", role="leader") == 1 and ours.value("raftkv_role", role="follower") == 0
    assert ours.value("raftkv_follower_lag_entries", peer="n2") == 1
    assert ours.value("raftkv_peer_queue_depth", peer="n2") == 4


async def test_metrics_move_under_load_on_a_real_cluster(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with (
            LocalCluster(tmp_path, size=3, node_args=(f"--snapshot-entries={SNAPSHOT_ENTRIES}",)) as cluster,
            httpx.AsyncClient(timeout=10, trust_env=False) as http,
        ):
            leader = await cluster.wait_for_leader()
            follower, other = (node for node in cluster.nodes if node != leader)
            urls = {node: cluster.client_url(node) for node in cluster.nodes}
            before = {node: await scrape(http, url) for node, url in urls.items()}
            for node, metrics in before.items():
                assert metrics.names >= METRICS, (node, METRICS - metrics.names)

            for i in range(WRITES):
                answer = await http.put(f"{urls[leader]}/kv/key-{i}", json={"value": i})
                assert answer.status_code == 200, answer.text
            for i in range(5):  # linearizable reads on a follower: the leader confirms each in a round
                assert (await http.get(f"{urls[follower]}/kv/key-{i}")).status_code == 200
            backup = await http.get(urls[leader] + "/cluster/snapshot", headers=cluster.cluster_headers)
            assert backup.status_code == 200
            on_leader = await scrape(http, urls[leader])
            _assert_moved(before[leader], on_leader, "raftkv_proposals_total", WRITES, outcome="committed")
            _assert_moved(before[leader], on_leader, "raftkv_proposal_commit_duration_seconds_count", WRITES)
            _assert_moved(before[leader], on_leader, "raftkv_storage_fsync_duration_seconds_count", 1)
            _assert_moved(before[leader], on_leader, "raftkv_read_index_rounds_total", 1)
            _assert_moved(
                before[leader],
                on_leader,
                "raftkv_http_request_duration_seconds_count",
                WRITES,
                route="/kv/{key}",
                method="PUT",
                status="200",
            )
            for operation in ("save", "backup"):
                _assert_moved(
                    before[leader],
                    on_leader,
                    "raftkv_snapshot_duration_seconds_count",
                    1,
                    operation=operation,
                )
            assert on_leader.value("raftkv_snapshot_size_bytes") > 0
            assert on_leader.value("raftkv_commit_index") >= WRITES
            assert on_leader.value("raftkv_role", role="leader") == 1

            answer = await cluster.cluster_call("POST", "/cluster/transfer-leadership", {"id": follower})
            assert answer.status_code == 200, answer.text
            await cluster.kill(other)
            answer = await http.put(f"{urls[follower]}/kv/after", json={"value": "transfer"})
            assert answer.status_code == 200, answer.text
            on_new_leader = await _until_transport_errors(http, urls[follower], other)
            _assert_moved(before[follower], on_new_leader, "raftkv_leader_changes_total", 1)
            _assert_moved(before[follower], on_new_leader, "raftkv_term", 1)
            assert on_new_leader.value("raftkv_role", role="leader") == 1
            assert on_new_leader.value("raftkv_follower_lag_entries", peer=other) >= 1
            old_leader = await scrape(http, urls[leader])
            assert old_leader.value("raftkv_role", role="follower") == 1


async def _until_transport_errors(http: httpx.AsyncClient, url: str, peer: str) -> Scrape:
    """The metrics of the node at ``url`` once it has counted a transport error to ``peer`` (which is down)."""
    while True:
        metrics = await scrape(http, url)
        if metrics.value("raftkv_peer_transport_errors_total", peer=peer) > 0:
            return metrics
        await trio.sleep(0.1)  # polling another process: no event to wait on


def _assert_moved(before: Scrape, after: Scrape, name: str, by: float, **labels: str) -> None:
    moved = after.value(name, **labels) - before.value(name, **labels)
    assert moved >= by, f"{name}{_labels(labels)} moved by {moved}, expected at least {by}"


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={v!r}" for k, v in labels.items()) + "}" if labels else ""
