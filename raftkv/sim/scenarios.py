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
from raftkv.raft.types import Role
from raftkv.sim.cluster import Cluster, address
from raftkv.sim.simulation import SimFailure


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


SCENARIOS: dict[str, Callable[[], None]] = {
    scenario.__name__: scenario for scenario in (a_change_before_the_first_commit_of_a_term,)
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
