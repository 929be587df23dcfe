"""Linearizable reads that write nothing to the log (thesis §6.4): ReadIndex on the leader, the same asked by a
follower for the reads it serves (§6.4.1), and the leader lease. Scenarios run on the simulator's hand-driven
``Cluster``, so every answer is also checked against what was committed before the read was asked."""

from __future__ import annotations

from functools import partial

import pytest

from raftkv.raft.core import NotLeader, Raft
from raftkv.raft.types import AppendEntries, ReadIndexReply, ReadIndexRequest, ReadState, Role
from raftkv.sim import Cluster


def elected(size: int = 3, **options: object) -> Cluster:
    cluster = Cluster(size, **options)  # type: ignore[arg-type]
    cluster.elect("n1")
    heartbeat(cluster)
    return cluster


def heartbeat(cluster: Cluster, leader: str = "n1") -> None:
    cluster.deliver_all()
    cluster.tick(leader, cluster.raft(leader).config.heartbeat_ticks)
    cluster.deliver_all()


def requests(cluster: Cluster) -> list[ReadIndexRequest]:
    """Take the ReadIndexRequests out of the cluster's outbox."""
    return [
        m for m in cluster.take(lambda m: isinstance(m, ReadIndexRequest)) if isinstance(m, ReadIndexRequest)
    ]


def test_a_follower_asks_the_leader_once_for_all_the_reads_waiting_on_it() -> None:
    """§6.4.1: the follower learns a read index from the leader, which confirms its leadership first; reads
    that arrive while a request is out share the next one."""
    cluster = elected()
    cluster.act("n1", partial(Raft.propose, data=b"x"))
    heartbeat(cluster)
    for ctx in ("a", "b"):
        cluster.read("n2", ctx)
    requests = [m for m in cluster.outbox if isinstance(m, ReadIndexRequest)]
    assert len(requests) == 1 and requests[0].dst == "n1"  # "b" waits for the next request
    cluster.deliver_all()
    committed = cluster.raft("n1").log.committed
    answered = cluster.nodes["n2"].answered_reads
    assert answered == [ReadState("a", committed), ReadState("b", committed)]


def test_a_follower_without_a_leader_refuses_reads() -> None:
    cluster = Cluster(3)
    with pytest.raises(NotLeader):
        cluster.read("n2", "r")


def test_an_answer_to_a_request_of_an_earlier_start_is_not_taken_for_a_new_one() -> None:
    """A restarted follower numbers its requests afresh: an answer to one it sent before the restart, arriving
    late, must not answer a request it sends now (its index may be older than the new read needs)."""
    cluster = elected()
    cluster.read("n2", "before")
    (old,) = requests(cluster)
    cluster.crash("n2")
    cluster.restart("n2")
    heartbeat(cluster)
    cluster.read("n2", "after")
    (new,) = requests(cluster)
    assert new.seq != old.seq
    stale = ReadIndexReply(cluster.raft("n1").term, "n1", "n2", old.seq, 0)
    cluster.deliver(stale)
    assert cluster.nodes["n2"].answered_reads == []


def test_a_lost_request_gives_up_after_an_election_timeout() -> None:
    cluster = elected()
    cluster.read("n2", "r")
    cluster.take(lambda m: isinstance(m, ReadIndexRequest))  # lost
    cluster.tick("n2", cluster.raft("n2").config.election_ticks)
    assert cluster.nodes["n2"].answered_reads == [ReadState("r", None)]


def test_a_lease_read_needs_no_round_while_the_lease_holds() -> None:
    """The lease: a quorum acknowledged a heartbeat sent less than ``lease_ticks`` ago, so the leader answers
    at once; once it has heard nothing for that long, it goes back to a ReadIndex round."""
    cluster = elected()
    cluster.read("n1", "in-lease", lease=True)
    assert cluster.nodes["n1"].answered_reads == [ReadState("in-lease", cluster.raft("n1").log.committed)]
    cluster.take()
    leader = cluster.raft("n1")
    for _ in range(leader.config.lease_ticks):  # heartbeats go out, nothing comes back
        cluster.tick("n1")
        cluster.take()
    cluster.read("n1", "expired", lease=True)
    assert len(cluster.nodes["n1"].answered_reads) == 1  # waits for a round now
    assert any(isinstance(m, AppendEntries) for m in cluster.outbox)


def test_no_lease_while_handing_over_leadership() -> None:
    """TimeoutNow makes its target campaign at once, ignoring the voters' lease: the old leader's lease ends
    with the handover."""
    cluster = elected()
    cluster.act("n1", lambda raft: raft.transfer_leadership("n2"))
    cluster.read("n1", "r", lease=True)
    assert cluster.nodes["n1"].answered_reads == []


def test_the_lease_is_shorter_than_the_election_timeout_by_the_drift_margin() -> None:
    config = Cluster(3).raft("n1").config
    assert config.lease_ticks < config.election_ticks * 0.9


def test_a_restarted_server_ignores_candidates_for_an_election_timeout() -> None:
    """What the lease also relies on: a server that restarts may have acknowledged the leader just before, so
    for one election timeout it helps elect nobody (it cannot know whom it acknowledged)."""
    cluster = elected()
    cluster.crash("n3")
    cluster.restart("n3")
    cluster.crash("n1")
    candidate = cluster.raft("n2")
    assert (
        cluster.campaign("n2", voters=["n2", "n3"]).role is not Role.LEADER
    )  # n3 does not tick: still quiet
    cluster.tick("n3", cluster.raft("n3").config.election_ticks)  # its first election timeout passes
    cluster.take(lambda m: m.src == "n3")
    assert cluster.campaign("n2", voters=["n2", "n3"]) is candidate and candidate.role is Role.LEADER
