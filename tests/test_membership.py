"""Membership changes in the sans-IO core (chapter 4 of the Raft thesis), each scenario on a hand-driven
``Cluster`` whose every step is checked against Raft's safety properties, plus the rules of ``check_change``."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest

from raftkv.raft.core import MembershipChangeRefused, Raft
from raftkv.raft.membership import Membership, MembershipError, check_change
from raftkv.raft.types import AppendEntries, EntryKind, RequestVote, Role, TimeoutNow
from raftkv.sim import Cluster
from raftkv.sim.cluster import address


def members(*voters: str, learners: tuple[str, ...] = (), promote: tuple[str, ...] = ()) -> Membership:
    everyone = (*voters, *learners)
    return Membership.of(voters, {n: address(n) for n in everyone}, learners=learners, promote=promote)


def joint(new: tuple[str, ...], old: tuple[str, ...]) -> Membership:
    return Membership.of(new, {n: address(n) for n in (*new, *old)}, outgoing=old)


def elected(size: int = 3, spares: int = 0, leader: str = "n1") -> Cluster:
    cluster = Cluster(size, spares=spares)
    cluster.elect(leader)
    settle(cluster, leader)
    return cluster


def settle(cluster: Cluster, leader: str = "n1", rounds: int = 3) -> None:
    """Deliver everything, with heartbeat rounds in between, so followers learn commits and catch up."""
    for _ in range(rounds):
        cluster.deliver_all()
        cluster.tick(leader, cluster.raft(leader).config.heartbeat_ticks)
    cluster.deliver_all()


def lease_over(cluster: Cluster, node_id: str) -> None:
    """Let ``node_id`` time out (its own ballots dropped), so it no longer ignores candidates for the sake
    of a leader it heard from recently (the check-quorum lease)."""
    raft = cluster.raft(node_id)
    while raft.leader_id is not None:
        cluster.tick(node_id)
    cluster.take(lambda m: m.src == node_id)


def change(cluster: Cluster, leader: str, target: Membership) -> None:
    cluster.act(leader, lambda raft: raft.change_membership(target))


# --- the rules of a change ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        (members("n1", "n2", "n3", "n4"), True),  # one voter added
        (members("n1", "n2"), True),  # one removed
        (members("n1", "n2", "n3", learners=("n4", "n5")), True),  # learners come and go freely
        (members("n1", "n2", "n3", "n4", "n5"), False),  # two voters at once without joint consensus
        (members("n1", "n4"), False),  # one out, one in: two changes
        (members(), False),  # no voter left
    ],
)
def test_a_simple_change_moves_one_voter_at_most(target: Membership, allowed: bool) -> None:
    """§4.2: single-server changes keep every majority of the old voters overlapping one of the new."""
    if allowed:
        check_change(members("n1", "n2", "n3"), target)
    else:
        with pytest.raises(MembershipError):
            check_change(members("n1", "n2", "n3"), target)


def test_a_joint_configuration_starts_from_the_current_voters_and_leaves_for_its_new_half() -> None:
    """§4.3: C_old -> C_old,new -> C_new, and nothing else in between."""
    current = members("n1", "n2", "n3")
    entering = joint(("n3", "n4", "n5"), ("n1", "n2", "n3"))
    check_change(current, entering)
    with pytest.raises(MembershipError):
        check_change(current, joint(("n3", "n4", "n5"), ("n1", "n2")))
    check_change(entering, entering.leave_joint())
    with pytest.raises(MembershipError):
        check_change(entering, members("n1", "n2", "n3"))  # back to C_old directly
    assert entering.leave_joint() == members("n3", "n4", "n5")  # the old voters' addresses go with them


def test_a_joint_quorum_needs_a_majority_of_each_half() -> None:
    """§4.3: while joint, agreement needs separate majorities of C_old and of C_new."""
    config = joint(("n3", "n4", "n5"), ("n1", "n2", "n3"))
    assert not config.has_quorum({"n3", "n4", "n5"})  # all of C_new, one of C_old
    assert not config.has_quorum({"n1", "n2", "n3"})
    assert config.has_quorum({"n2", "n3", "n4"})
    match = {"n1": 9, "n2": 7, "n3": 5, "n4": 8, "n5": 8}
    assert config.committed_index(match) == 7  # C_old would allow 7, C_new 8


def test_memberships_encode_canonically_and_refuse_garbage() -> None:
    config = members("n2", "n1", learners=("n3",), promote=("n3",))
    assert Membership.decode(config.encode()) == config
    assert config.encode() == members("n1", "n2", learners=("n3",), promote=("n3",)).encode()
    for garbage in (b"", b"[]", b'{"voters": ["n1"]}', config.encode().replace(b'"n3"', b"3")):
        with pytest.raises(MembershipError):
            Membership.decode(garbage)


# --- changes in a running cluster --------------------------------------------------------------------------


def test_a_configuration_takes_effect_when_appended_and_reverts_when_truncated() -> None:
    """§4.1: a server uses the latest configuration in its log, committed or not."""
    cluster = elected(spares=1)
    change(cluster, "n1", members("n1", "n2", "n3", learners=("n4",)))
    assert cluster.raft("n1").membership.learners == {"n4"}  # in force on the leader at once
    cluster.take()  # ... and on nobody else: it never leaves n1
    cluster.crash("n1")
    lease_over(cluster, "n3")
    cluster.elect("n2", voters=["n2", "n3"])
    settle(cluster, "n2")
    cluster.act("n2", partial(Raft.propose, data=b"after"))
    cluster.restart("n1")
    assert cluster.raft("n1").membership.learners == {"n4"}  # still the latest in its own log
    settle(cluster, "n2")
    assert cluster.raft("n1").membership == members("n1", "n2", "n3")  # truncated away: the one before it


def test_a_learner_gets_the_log_but_neither_votes_nor_counts() -> None:
    """§4.2.1: a learner catches up without taking part in elections or commitment."""
    cluster = elected(spares=1)
    change(cluster, "n1", members("n1", "n2", "n3", learners=("n4",)))
    settle(cluster)
    cluster.act("n1", partial(Raft.propose, data=b"x"))
    settle(cluster)
    assert cluster.nodes["n4"].machine.applied_index == cluster.raft("n1").log.committed
    learner = cluster.raft("n4")
    cluster.tick("n4", 10 * learner.config.election_ticks)
    assert learner.role is Role.FOLLOWER and not [m for m in cluster.outbox if isinstance(m, RequestVote)]
    cluster.crash("n2")
    cluster.crash("n3")
    cluster.act("n1", partial(Raft.propose, data=b"y"))
    settle(cluster)
    assert cluster.raft("n1").log.committed < cluster.raft("n1").log.last_index  # n1 + learner is no quorum


def test_a_learner_to_promote_becomes_a_voter_once_caught_up() -> None:
    """§4.2.1: the leader promotes the new server when it holds (nearly) the whole log."""
    cluster = elected(spares=1)
    for i in range(20):
        cluster.act("n1", partial(Raft.propose, data=b"%d" % i))
    settle(cluster)
    change(cluster, "n1", members("n1", "n2", "n3", learners=("n4",), promote=("n4",)))
    settle(cluster)
    assert cluster.raft("n1").membership == members("n1", "n2", "n3", "n4")
    assert cluster.raft("n4").promotable


def test_one_change_at_a_time_and_none_before_a_commit_in_the_term() -> None:
    """§4.2 and Ongaro's 2015 fix: a second change waits for the first to commit, and a new leader waits for an
    entry of its own term to commit before it changes anything."""
    cluster = elected(spares=2)
    change(cluster, "n1", members("n1", "n2", "n3", learners=("n4",)))
    with pytest.raises(MembershipChangeRefused, match="in progress"):
        change(cluster, "n1", members("n1", "n2", "n3", learners=("n4", "n5")))
    settle(cluster)
    change(cluster, "n1", members("n1", "n2", "n3", learners=("n4", "n5")))
    settle(cluster)
    cluster.act("n1", lambda raft: raft.transfer_leadership("n2"))
    cluster.deliver_all(lambda m: not isinstance(m, AppendEntries) or m.src != "n2")
    assert cluster.raft("n2").role is Role.LEADER  # elected, its no-op not yet replicated
    with pytest.raises(MembershipChangeRefused, match="not yet committed an entry of its term"):
        change(cluster, "n2", members("n1", "n2", "n3"))
    settle(cluster, "n2")
    change(cluster, "n2", members("n1", "n2", "n3"))


def test_joint_consensus_replaces_every_voter_and_leaves_by_itself() -> None:
    """§4.3: C_old,new commits on both majorities, then the leader appends C_new on its own."""
    cluster = elected(spares=3)
    target = replace(members("n4", "n5", "n6"), outgoing=frozenset({"n1", "n2", "n3"}))
    target = replace(
        target, addresses=tuple(sorted({n: address(n) for n in ("n1", "n2", "n3", "n4", "n5", "n6")}.items()))
    )
    change(cluster, "n1", target)
    settle(cluster)
    leader = cluster.leader()
    assert leader is not None and leader.membership == members("n4", "n5", "n6")
    kinds = [entry.kind for entry in leader.log.entries]
    assert kinds.count(EntryKind.MEMBERSHIP) == 2  # C_old,new then C_new


def test_a_leader_that_removes_itself_hands_over_once_the_change_commits() -> None:
    """§4.2.2: the leader manages the cluster without counting itself until C_new commits, then steps down
    (here handing over at once with TimeoutNow to the most caught-up voter)."""
    cluster = elected()
    change(cluster, "n1", members("n2", "n3"))
    cluster.deliver_all(lambda m: not isinstance(m, TimeoutNow))
    cluster.tick("n1", cluster.raft("n1").config.heartbeat_ticks)
    cluster.deliver_all(lambda m: not isinstance(m, TimeoutNow))
    assert cluster.raft("n1").role is Role.FOLLOWER and not cluster.raft("n1").promotable
    assert [m.dst for m in cluster.outbox if isinstance(m, TimeoutNow)] in (["n2"], ["n3"])
    cluster.deliver_all()
    new = cluster.leader()
    assert new is not None and new.id in ("n2", "n3") and new.membership == members("n2", "n3")


def test_a_leader_that_removed_itself_and_crashed_can_still_finish_the_change() -> None:
    """§4.2.2: until its removal commits, the old leader stays electable (its committed configuration
    counts it); otherwise the servers left, whose logs are shorter, could elect nobody."""
    cluster = elected(2)
    change(cluster, "n1", members("n2"))
    cluster.take()  # n2 never gets it: only n1 holds its own removal
    cluster.crash("n1")
    cluster.restart("n1")
    assert cluster.raft("n1").promotable
    lease_over(cluster, "n2")
    cluster.elect("n1")  # n2 votes for the longer log, and {n2} is the configuration whose votes count
    settle(cluster)
    assert cluster.raft("n2").membership == members("n2")


def test_a_removed_server_that_keeps_campaigning_does_not_disrupt_the_cluster() -> None:
    """§4.2.3: a server removed without knowing it times out and campaigns; the others, hearing from their
    leader, ignore it (the check-quorum lease), so the leader keeps its term."""
    cluster = elected()
    change(cluster, "n1", members("n1", "n2"))
    cluster.deliver_all(lambda m: m.dst != "n3")  # n3 never learns of its removal
    settle(cluster)
    cluster.take(lambda m: m.dst == "n3")
    term = cluster.raft("n1").term
    for _ in range(5):
        cluster.tick("n3", 2 * cluster.raft("n3").config.election_ticks)
        cluster.tick("n1", cluster.raft("n1").config.heartbeat_ticks)
        cluster.deliver_all(lambda m: m.dst != "n3")
    assert cluster.raft("n1").role is Role.LEADER and cluster.raft("n1").term == term


def test_a_snapshot_carries_the_configuration_of_its_index() -> None:
    """§4.1 with §7: a server restored from a snapshot acts on the configuration it records."""
    cluster = elected(spares=1)
    change(cluster, "n1", members("n1", "n2", "n3", learners=("n4",)))
    settle(cluster)
    for i in range(5):
        cluster.act("n1", partial(Raft.propose, data=b"%d" % i))
    settle(cluster)
    cluster.nodes["n1"].compact()
    snapshot = cluster.raft("n1").log.snapshot
    assert snapshot is not None and snapshot.membership.learners == {"n4"}
    cluster.crash("n1")
    cluster.restart("n1")
    assert cluster.raft("n1").membership.learners == {"n4"}
