"""Scripted runs of the simulator: fault schedules that its random search finds too rarely to rely on.

Each scenario drives a hand-controlled ``Cluster`` (so the safety checker runs after every step, exactly as in
the random runs) through one known hazard, and must pass on a correct core. CI runs them with the seeds, and
the mutation check counts them as runs of the simulator.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from raftkv.raft.core import MembershipChangeRefused
from raftkv.raft.membership import Membership
from raftkv.raft.types import AnyMessage, Role, TimeoutNow
from raftkv.sim.cluster import Cluster, address
from raftkv.sim.simulation import SimFailure


def figure_8_cluster() -> Cluster:
    """Five servers that replicate one entry per batch (so a follower can hold a prefix of a batch), n1 leading."""
    cluster = Cluster(5, max_batch_entries=1, pre_vote=False, check_quorum=False)
    cluster.elect("n1")
    return cluster


def figure_8(cluster: Cluster) -> int:
    """§5.4.2, Figure 8, with a no-op per term: (2, t1) reaches a majority in term 3 but must not be committed
    then, because n5 (holding (2, t2)) can still win and overwrite it. Returns the term-3 leader's commit index
    at that moment (1 on a correct core; the checker fails the run if an overwritten entry was committed)."""
    cluster.deliver_all()  # n1 leads term 1, the no-op (1, t1) is committed everywhere
    cluster.act("n1", lambda raft: raft.propose(b"x"))  # (2, t1) on n1
    _deliver_until(cluster, ("n1", "n2"), lambda: cluster.raft("n2").log.last_index == 2)
    cluster.take()
    cluster.crash("n1")
    cluster.elect("n5", voters=["n3", "n4"])  # term 2: n5 appends its no-op (2, t2) and is cut off
    cluster.take()
    cluster.crash("n5")
    cluster.restart("n1")
    leader = cluster.elect("n1", voters=["n3", "n4"])  # term 3, no-op (3, t3)
    # One entry per batch: (2, t1) reaches n3 and n4, (3, t3) does not.
    _deliver_until(cluster, ("n1", "n3"), lambda: leader.progress["n3"].match == 2)
    _deliver_until(cluster, ("n1", "n4"), lambda: leader.progress["n4"].match == 2)
    commit_in_term_3 = leader.log.committed
    cluster.take()
    cluster.crash("n1")
    cluster.restart("n5")
    cluster.elect("n5", voters=["n2", "n3", "n4"])  # (2, t2) is more up to date than (2, t1)
    cluster.deliver_all()
    return commit_in_term_3


def an_entry_of_an_older_term_counted_towards_commit() -> None:
    figure_8(figure_8_cluster())


def _deliver_until(cluster: Cluster, between: tuple[str, str], done: Callable[[], bool]) -> None:
    """Deliver messages between two nodes one at a time until ``done()`` holds."""
    while not done():
        batch = cluster.take(_between(*between))
        if not batch:
            raise AssertionError("ran out of messages")
        cluster.deliver(batch[0])
        cluster.outbox.extend(batch[1:])


def _founders(*voters: str) -> Membership:
    return Membership.of(voters, {voter: address(voter) for voter in voters})


def a_change_before_the_first_commit_of_a_term() -> None:
    """Ongaro's counterexample (raft-dev, 2015) to single-server changes without the rule that a leader first
    commits an entry of its own term:

    1. n1 leads {n1..n4} and adds n5 as a voter; only n5 receives that configuration before n1 crashes;
    2. n2 is elected by {n2, n3, n4} and, at once, removes n4; it commits that with n3 alone (a majority of
       {n1, n2, n3});
    3. n1 restarts with {n1..n5} in its log; n4 and n5 have heard nothing of n2's term and vote for it.

    Two leaders' majorities that need not meet: n1 would overwrite what n2 committed. With the rule, n2's
    change waits for its no-op to commit on a majority of {n1..n4}, which n1 can then no longer win.
    """
    cluster = Cluster(4, spares=1)
    cluster.elect("n1")
    cluster.settle("n1")
    added = _founders("n1", "n2", "n3", "n4").with_learner("n5", address("n5"), promote=False).promoted("n5")
    cluster.act("n1", lambda raft: raft.change_membership(added))
    cluster.settle("n1", among=("n1", "n5"), rounds=1)
    cluster.crash("n1")
    for node_id in ("n2", "n3", "n4"):
        cluster.lease_over(node_id)
    cluster.elect("n2", voters=("n2", "n3", "n4"))
    removed = _founders("n1", "n2", "n3")
    try:
        cluster.act("n2", lambda raft: raft.change_membership(removed))
    except MembershipChangeRefused:
        cluster.settle("n2", among=("n2", "n3", "n4"))  # its no-op commits first
        cluster.act("n2", lambda raft: raft.change_membership(removed))
    cluster.settle("n2", among=("n2", "n3"))
    cluster.restart("n1")
    for node_id in ("n4", "n5"):
        cluster.lease_over(node_id)
    if cluster.campaign("n1", voters=("n1", "n4", "n5")).role is Role.LEADER:
        raise AssertionError("n1 won an election it can only win by breaking safety")


def _between(*nodes: str) -> Callable[[AnyMessage], bool]:
    return lambda m: m.src in nodes and m.dst in nodes


def _commit_a_write(cluster: Cluster, leader: str, among: tuple[str, ...]) -> None:
    cluster.act(leader, lambda raft: raft.propose(b"written by the new leader"))
    cluster.settle(leader, among=among)


def _stale_lease_read(cluster: Cluster, old_leader: str) -> None:
    """Ask the old leader for a lease read; the checker fails it if it answers with what is now stale."""
    if cluster.raft(old_leader).role is Role.LEADER:
        cluster.read(old_leader, "lease read on the old leader", lease=True)


def a_lease_that_outlasts_an_election() -> None:
    """The leader n1 is cut off from n2 and n3, which elect n2 and commit a write. n1 has heard nothing since
    before their election timeouts ran out, so its lease (shorter than an election timeout) is over: a lease
    read must not be answered from its state, now stale."""
    cluster = Cluster(3)
    cluster.elect("n1")
    cluster.settle("n1")
    inside = _between("n2", "n3")
    for _ in range(8 * cluster.raft("n1").config.election_ticks):
        for node_id in cluster.ids:
            cluster.tick(node_id)
        cluster.deliver_all(inside)
        cluster.take()
        new = next((raft for raft in map(cluster.raft, ("n2", "n3")) if raft.role is Role.LEADER), None)
        if new is not None:
            _commit_a_write(cluster, new.id, among=("n2", "n3"))
            _stale_lease_read(cluster, "n1")
            return
    raise AssertionError("n2 and n3 elected no leader")


def a_lease_kept_through_a_handover() -> None:
    """n1 hands leadership to n2 (TimeoutNow, which lets n2 campaign past the voters' lease); n2 wins with n3
    and commits a write before n1 hears of it. n1's lease ended with the handover."""
    cluster = Cluster(3)
    cluster.elect("n1")
    cluster.settle("n1")
    cluster.act("n1", lambda raft: raft.transfer_leadership("n2"))
    cluster.deliver_all(lambda m: isinstance(m, TimeoutNow))
    cluster.deliver_all(_between("n2", "n3"))
    cluster.take()
    if cluster.raft("n2").role is not Role.LEADER:
        raise AssertionError("n2 did not take over")
    _commit_a_write(cluster, "n2", among=("n2", "n3"))
    _stale_lease_read(cluster, "n1")


def a_restarted_voter_helps_elect_within_a_lease() -> None:
    """n1 leads with a lease that rests on n3's acknowledgement; n3 restarts at once, and n2, which has not heard
    from n1 for an election timeout, asks n3 for its vote. A restarted server cannot know whom it last
    acknowledged, so it helps elect nobody for one election timeout; otherwise n2 wins and commits while n1's
    lease still holds."""
    cluster = Cluster(3)
    cluster.elect("n1")
    cluster.settle("n1")
    cluster.lease_over("n2")  # n2 stops hearing from n1 ...
    cluster.tick("n1", cluster.raft("n1").config.heartbeat_ticks)
    cluster.deliver_all(_between("n1", "n3"))  # ... while n3 acknowledges it: the lease rests on n3
    cluster.take()
    cluster.crash("n3")
    cluster.restart("n3")
    if cluster.campaign("n2", voters=("n2", "n3")).role is Role.LEADER:
        _commit_a_write(cluster, "n2", among=("n2", "n3"))
        _stale_lease_read(cluster, "n1")


SCENARIOS: dict[str, Callable[[], None]] = {
    scenario.__name__: scenario
    for scenario in (
        an_entry_of_an_older_term_counted_towards_commit,
        a_change_before_the_first_commit_of_a_term,
        a_lease_that_outlasts_an_election,
        a_lease_kept_through_a_handover,
        a_restarted_voter_helps_elect_within_a_lease,
    )
}


def run_scenario(name: str) -> None:
    """Run one scenario; raises ``SimFailure`` (with the replay command) if a property breaks."""
    try:
        SCENARIOS[name]()
    except Exception as exc:
        raise SimFailure(
            f"scenario {name}: {exc}\n{''.join(traceback.format_exception(exc)[-4:])}"
            f"replay: python -m raftkv.sim --scenario {name}"
        ) from exc
