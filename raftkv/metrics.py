"""What ``GET /metrics`` tells, in the Prometheus text format: the definitions of every metric a node exports.

Each node has its own ``CollectorRegistry`` (never the process-wide one), so several nodes in one test process
keep apart. Events -- a proposal's outcome, an fsync, a request, a snapshot -- are counted or timed where they
happen; the state -- term, role, indexes, each follower's lag, each peer's queue -- is read from the node when
Prometheus scrapes, so keeping it costs nothing between scrapes. The core (``raftkv.raft``), the state machine
(``raftkv.kv``) and the storage know nothing of this module: the node times the calls it makes, and the disk
takes an observer callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from raftkv.raft.types import Role

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The text exposition format ``generate_latest`` writes, which every Prometheus version reads."""

FSYNC_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SNAPSHOT_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PROPOSAL_OUTCOMES: Final = ("committed", "not_leader", "dropped", "timeout", "abandoned")
"""How a client write ends on the node it reached: applied as proposed; refused (no leader known); dropped
(leadership changed, or a snapshot replaced it, before it was known to commit); no answer within the request
timeout; or the caller went away (the client disconnected, the node stopped)."""

SNAPSHOT_OPERATIONS: Final = ("save", "restore", "install", "backup")


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the node's gauges show, read at scrape time."""

    term: int
    role: Role
    commit_index: int
    applied_index: int
    last_log_index: int
    follower_lag: Mapping[str, int]  # on the leader: entries each follower's log is known to lack


class NodeMetrics:
    """The metrics of one node, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.leader_changes = Counter(
            "raftkv_leader_changes_total", "Leaders this node has come to know of.", registry=registry
        )
        self.proposals = Counter(
            "raftkv_proposals_total",
            "Client writes proposed through this node, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.read_index_rounds = Counter(
            "raftkv_read_index_rounds_total",
            "Heartbeat rounds this leader sent to confirm its leadership for linearizable reads.",
            registry=registry,
        )
        self.transport_errors = Counter(
            "raftkv_peer_transport_errors_total",
            "Messages to a peer that could not be delivered: a broken stream, a full queue, a failed "
            "snapshot transfer.",
            ["peer"],
            registry=registry,
        )
        self.fsync_seconds = Histogram(
            "raftkv_storage_fsync_duration_seconds",
            "Time of one fsync of a storage file (the log, a snapshot).",
            buckets=FSYNC_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "raftkv_proposal_commit_duration_seconds",
            "From a client write's arrival to its entry being known committed on this node.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.http_seconds = Histogram(
            "raftkv_http_request_duration_seconds",
            "HTTP requests, by route template, method and status (to the response's headers).",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "raftkv_snapshot_duration_seconds",
            "Snapshot work: save (write this node's own), restore (rebuild the state machine from its own at "
            "start-up), install (rebuild it from the leader's), backup (write a backup's data).",
            ["operation"],
            buckets=SNAPSHOT_BUCKETS,
            registry=registry,
        )
        self.snapshot_bytes = Gauge(
            "raftkv_snapshot_size_bytes",
            "Size of the data of the snapshot this node last saved or installed.",
            registry=registry,
        )
        for outcome in PROPOSAL_OUTCOMES:
            self.proposals.labels(outcome=outcome)
        for operation in SNAPSHOT_OPERATIONS:
            self.snapshot_seconds.labels(operation=operation)

    def observe_state(self, read: Callable[[], NodeState]) -> None:
        """Show the node's state, as ``read`` gives it at each scrape."""
        self.registry.register(_StateCollector(read))

    def observe_queues(self, read: Callable[[], Mapping[str, int]]) -> None:
        """Show the messages waiting for each peer, as ``read`` gives them at each scrape."""
        self.registry.register(_QueueCollector(read))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], NodeState]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.read()
        yield GaugeMetricFamily("raftkv_term", "The current Raft term.", value=state.term)
        role = GaugeMetricFamily(
            "raftkv_role", "1 for the role this node has now, 0 for the others.", labels=["role"]
        )
        for each in Role:
            role.add_metric([each.value], 1 if each is state.role else 0)
        yield role
        yield GaugeMetricFamily(
            "raftkv_commit_index", "Highest log index known committed.", value=state.commit_index
        )
        yield GaugeMetricFamily(
            "raftkv_applied_index",
            "Highest log index applied to the state machine.",
            value=state.applied_index,
        )
        yield GaugeMetricFamily(
            "raftkv_last_log_index", "Index of the last entry in this node's log.", value=state.last_log_index
        )
        lag = GaugeMetricFamily(
            "raftkv_follower_lag_entries",
            "On the leader: entries of its log a follower is not known to hold.",
            labels=["peer"],
        )
        for peer, entries in sorted(state.follower_lag.items()):
            lag.add_metric([peer], entries)
        yield lag


class _QueueCollector(Collector):
    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "raftkv_peer_queue_depth", "Messages waiting to be sent to a peer.", labels=["peer"]
        )
        for peer, queued in sorted(self.read().items()):
            depth.add_metric([peer], queued)
        yield depth
