"""Focused tests of the sans-IO Raft core: one per rule of the paper's Figure 2, the known traps, and the
classic scenarios (Figure 8, a stale leader after a partition, a disruptive node stopped by pre-vote).

Scenario tests drive a hand-controlled ``Cluster`` from the simulator, so every step is also checked against
all of Raft's safety properties; rule tests talk to a single ``Raft`` directly.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from raftkv.raft.core import Config, NotLeader, Raft
from raftkv.raft.membership import Membership
from raftkv.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    HardState,
    InstallSnapshot,
    PersistentState,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteReply,
    Role,
    Snapshot,
)
from raftkv.sim import Cluster, SafetyViolation
from raftkv.sim.scenarios import figure_8, figure_8_cluster

THREE = ("n1", "n2", "n3")
FIVE = ("n1", "n2", "n3", "n4", "n5")


def make(
    node_id: str = "n1",
    voters: tuple[str, ...] = THREE,
    *,
    term: int = 0,
    vote: str | None = None,
    entries: tuple[Entry, ...] = (),
    commit: int = 0,
    **options: object,
) -> Raft:
    """A lone core, as if restarted with this state. Without check-quorum unless asked: its leader lease
    (a restarted node ignores candidates for an election timeout) is not what these rule tests are about."""
    founding = Membership.of(voters, {voter: f"sim://{voter}" for voter in voters})
    state = PersistentState(HardState(term, vote, commit), Snapshot(0, 0, founding), entries)
    config = Config(id=node_id, **{"check_quorum": False, **options})  # type: ignore[arg-type]
    return Raft(config, state, random.Random(1))


def log_of(*terms: int) -> tuple[Entry, ...]:
    return tuple(Entry(index, term, f"e{index}".encode()) for index, term in enumerate(terms, start=1))


def run_out_timer(raft: Raft) -> Ready:
    """Tick until the election timer fires (the role or the term changes)."""
    before = (raft.role, raft.term)
    for _ in range(2 * raft.config.election_ticks):
        raft.tick()
        if (raft.role, raft.term) != before:
            return raft.ready()
    raise AssertionError("the election timer never fired")


def replies(ready: Ready) -> list[AnyMessage]:
    return [m for m in ready.messages if isinstance(m, AppendEntriesReply | RequestVoteReply)]


def append(
    term: int, prev: tuple[int, int], entries: tuple[Entry, ...] = (), commit: int = 0
) -> AppendEntries:
    return AppendEntries(term, "n2", "n1", prev[0], prev[1], entries, commit)


def only(ready: Ready) -> AnyMessage:
    assert len(ready.all_messages) == 1, ready.all_messages
    return ready.all_messages[0]


def elected(size: int = 3, leader: str = "n1", **options: Any) -> Cluster:
    cluster = Cluster(size, **options)
    cluster.elect(leader)
    settle(cluster, leader)
    return cluster


def settle(cluster: Cluster, leader: str = "n1") -> None:
    """Deliver everything, then one heartbeat round: followers learn the commit index from heartbeats."""
    cluster.deliver_all()
    cluster.tick(leader, cluster.raft(leader).config.heartbeat_ticks)
    cluster.deliver_all()


# --- Figure 2, all servers ---------------------------------------------------------------------------------


def test_committed_entries_are_applied_once_in_order() -> None:
    """§5.3, Figure 2 (all servers): committed entries are applied in log order, each once."""
    cluster = elected()
    for command in (b"a", b"b"):
        cluster.act("n1", partial(Raft.propose, data=command))
    settle(cluster)
    machines = [node.machine for node in cluster.nodes.values()]
    assert {machine.applied_index for machine in machines} == {3}
    assert len({machine.digest for machine in machines}) == 1
    assert cluster.checker.commands[1:] == [None, b"a", b"b"]


def test_a_higher_term_in_any_message_makes_a_node_follow_it() -> None:
    """§5.1, Figure 2 (all servers): a message of a higher term makes any node a follower of that term."""
    cluster = elected()
    cluster.deliver(AppendEntriesReply(term=7, src="n2", dst="n1", success=False, match_index=0))
    leader = cluster.raft("n1")
    assert (leader.role, leader.term, leader.vote) == (Role.FOLLOWER, 7, None)


# --- followers and candidates ------------------------------------------------------------------------------


def test_a_follower_that_hears_from_its_leader_never_campaigns() -> None:
    """§5.2: a follower that keeps hearing from a valid leader stays a follower."""
    follower = make("n1", term=1)
    for tick in range(100):
        follower.tick()
        if tick % 5 == 0:
            follower.step(AppendEntries(1, "n2", "n1", 0, 0, (), 0))
    assert follower.role is Role.FOLLOWER


def test_a_candidate_bumps_its_term_votes_for_itself_persists_and_asks_everyone() -> None:
    """§5.2, Figure 2 (candidates): on its election timeout a follower starts an election."""
    candidate = make("n1", term=3, pre_vote=False)
    ready = run_out_timer(candidate)
    assert candidate.role is Role.CANDIDATE
    assert ready.hard_state == HardState(term=4, vote="n1", commit=0)
    asks = [m for m in ready.messages if isinstance(m, RequestVote)]
    assert sorted(m.dst for m in asks) == ["n2", "n3"]
    assert {(m.term, m.pre_vote) for m in asks} == {(4, False)}


def test_pre_vote_asks_for_the_next_term_without_taking_it() -> None:
    """Thesis §9.6: a pre-vote asks whether an election could be won before disturbing anyone."""
    node = make("n1", term=3)
    ready = run_out_timer(node)
    assert (node.role, node.term, ready.hard_state) == (Role.PRE_CANDIDATE, 3, None)
    assert {(m.term, m.pre_vote) for m in ready.messages if isinstance(m, RequestVote)} == {(4, True)}


def test_votes_of_a_majority_make_a_leader_that_appends_a_noop_and_replicates_it() -> None:
    """§5.2, thesis §6.4: a majority's votes make a leader, which commits a no-op of its term."""
    cluster = Cluster(3)
    leader = cluster.elect("n1", voters=["n2"])
    assert leader.role is Role.LEADER
    assert leader.log.entries == [Entry(1, leader.term, None)]
    assert {m.dst for m in cluster.outbox if isinstance(m, AppendEntries) and m.entries} == {"n2", "n3"}


def test_a_candidate_yields_to_a_leader_of_its_term() -> None:
    """§5.2: a candidate that hears from a leader of its own term becomes its follower."""
    candidate = make("n1", pre_vote=False)
    run_out_timer(candidate)
    candidate.step(AppendEntries(candidate.term, "n2", "n1", 0, 0, (), 0))
    assert (candidate.role, candidate.leader_id) == (Role.FOLLOWER, "n2")


def test_a_candidate_that_times_out_starts_a_new_election() -> None:
    """§5.2: a split vote ends in a timeout and a new election with a new term."""
    candidate = make("n1", pre_vote=False)
    run_out_timer(candidate)
    first = candidate.term
    run_out_timer(candidate)  # the timer fires again with no answers
    assert (candidate.role, candidate.term) == (Role.CANDIDATE, first + 1)


# --- leaders -----------------------------------------------------------------------------------------------


def test_a_leader_applies_a_command_only_after_a_quorum_stored_it() -> None:
    """§5.3: an entry is committed once stored on a majority, and only then applied."""
    cluster = elected()
    index, _ = cluster.act("n1", lambda raft: raft.propose(b"x"))
    assert cluster.nodes["n1"].machine.applied_index < index
    cluster.deliver_all(lambda m: m.dst == "n2" or m.src == "n2")
    assert cluster.nodes["n1"].machine.applied_index == index
    assert cluster.raft("n3").log.last_index < index  # one follower was enough


def test_followers_are_told_a_new_commit_index_at_once_not_at_the_next_heartbeat() -> None:
    """§5.3 lets followers learn the commit index from any later AppendEntries; the leader sends it as soon
    as it moves (as etcd does), so a follower can answer reads and forwarded writes without waiting."""
    cluster = elected()
    index, _ = cluster.act("n1", lambda raft: raft.propose(b"x"))
    cluster.deliver_all(lambda m: m.dst == "n2" or m.src == "n2")  # committed with n2; no tick since
    assert cluster.raft("n1").log.committed == cluster.raft("n2").log.committed == index
    cluster.deliver_all()
    assert cluster.raft("n3").log.committed == index


def test_a_commit_notice_is_not_answered_unless_refused() -> None:
    """§5.3: the commit notice is an AppendEntries at the follower's match point; accepting it teaches the
    leader nothing, so no reply goes back (heartbeats carry the acknowledgements). Refusing it still answers,
    so a follower that lost its log is found and repaired."""
    cluster = elected()
    index, _ = cluster.act("n1", lambda raft: raft.propose(b"x"))

    def notice(m: AnyMessage) -> bool:
        return isinstance(m, AppendEntries) and not m.reply

    cluster.deliver_all(lambda m: m.src == "n2" or (m.dst == "n2" and not notice(m)))
    notices = [m for m in cluster.take(notice) if isinstance(m, AppendEntries)]
    assert {m.dst for m in notices} == {"n2"} and [m.commit for m in notices] == [index]
    cluster.deliver(notices[0])
    assert cluster.raft("n2").log.committed == index
    assert not cluster.take(lambda m: m.src == "n2")  # accepted: no answer

    follower = make("n1", term=1, entries=log_of(1))
    follower.step(replace(append(1, (3, 1), commit=3), reply=False))  # n1 does not hold entry 3
    refusal = only(follower.ready())
    assert isinstance(refusal, AppendEntriesReply) and not refusal.success


def test_a_leader_counts_its_own_entries_only_once_persisted_even_after_a_snapshot_replaced_its_log() -> None:
    """§10.2.1: a leader may send before its own fsync, so its own copy counts towards commit only once the
    driver reports it durable -- also when a snapshot had cut its log short of what it once held."""
    node = make("n1", term=2, entries=log_of(1, 1, 1, 1, 1), pre_vote=False)
    membership = node.membership
    node.step(InstallSnapshot(2, "n2", "n1", Snapshot(3, 2, membership)))  # (3, t1) differs: the log goes
    assert node.log.last_index == 3 and node.ready().snapshot is not None
    node.persisted()
    run_out_timer(node)
    node.persisted()
    node.step(RequestVoteReply(node.term, "n2", "n1", granted=True))
    assert node.role is Role.LEADER
    no_op = node.ready().entries[-1].index  # handed to the driver, not yet durable
    node.step(AppendEntriesReply(node.term, "n2", "n1", success=True, match_index=no_op))
    assert node.log.committed < no_op  # n2 alone is not a quorum of three
    assert node.persisted() and node.log.committed == no_op


def crash_n3_while_n1_commits(cluster: Cluster) -> None:
    """n3 is down while n1 commits three commands with n2; what was on its way to n3 is lost."""
    cluster.crash("n3")
    for command in (b"a", b"b", b"c"):
        cluster.act("n1", partial(Raft.propose, data=command))
    cluster.deliver_all(lambda m: "n3" not in (m.src, m.dst))
    cluster.take()


def test_a_leader_repairs_a_follower_that_missed_everything() -> None:
    """§5.3: the leader backs nextIndex up until the logs match, then fills the follower in."""
    cluster = elected()
    crash_n3_while_n1_commits(cluster)
    cluster.restart("n3")
    catch_up(cluster)
    assert cluster.raft("n3").log.entries == cluster.raft("n1").log.entries
    assert cluster.nodes["n3"].machine.digest == cluster.nodes["n1"].machine.digest


def catch_up(cluster: Cluster) -> list[AnyMessage]:
    """Heartbeats for two election timeouts: the leader notices that a follower stopped making progress
    (the batches it sent were lost in a crash) and probes it afresh. Returns every message delivered."""
    delivered = []
    for _ in range(2 * cluster.raft("n1").config.election_ticks):
        cluster.tick("n1")
        while batch := cluster.take():
            delivered += batch
            for message in batch:
                cluster.deliver(message)
    return delivered


def test_followers_that_disagree_are_rolled_back_to_the_leader_log() -> None:
    """§5.3, Figure 7: conflicting suffixes of followers are overwritten by the leader's log."""
    # Figure 7: a follower with extra uncommitted entries of an old term.
    leader = make("n1", term=3, entries=log_of(1, 1, 3), commit=0, pre_vote=False)
    run_out_timer(leader)
    leader.step(RequestVoteReply(leader.term, "n2", "n1", granted=True))
    follower = make("n2", term=leader.term, entries=log_of(1, 1, 2, 2, 2))
    messages = [m for m in leader.ready().all_messages if m.dst == "n2"]
    for _ in range(10):
        for m in messages:
            follower.step(m)
        answers = follower.ready().messages
        for answer in answers:
            leader.step(answer)
        messages = [m for m in leader.ready().all_messages if m.dst == "n2"]
    assert [(e.index, e.term) for e in follower.log.entries] == [
        (e.index, e.term) for e in leader.log.entries
    ]


# --- AppendEntries receiver --------------------------------------------------------------------------------


def test_append_from_an_older_term_is_refused_with_our_term() -> None:
    """Figure 2 (AppendEntries receiver, 1): reply false if term < currentTerm."""
    follower = make("n1", term=5)
    follower.step(append(3, (0, 0), log_of(3)))
    reply = only(follower.ready())
    assert isinstance(reply, AppendEntriesReply)
    assert (reply.success, reply.term) == (False, 5)
    assert follower.log.last_index == 0


def test_append_that_does_not_match_at_prev_is_refused_with_a_conflict_hint() -> None:
    """Figure 2 (AppendEntries receiver, 2), §5.3: refuse a mismatch at prevLogIndex, with the conflict hint."""
    follower = make("n1", term=3, entries=log_of(1, 2, 2))
    follower.step(append(3, (3, 3), (Entry(4, 3),)))
    reply = only(follower.ready())
    assert isinstance(reply, AppendEntriesReply)
    assert (reply.success, reply.conflict_term, reply.conflict_index) == (False, 2, 2)
    assert follower.log.last_index == 3


def test_a_conflicting_entry_and_all_after_it_are_deleted() -> None:
    """Figure 2 (AppendEntries receiver, 3): a conflicting entry and all that follow it are deleted."""
    follower = make("n1", term=2, entries=log_of(1, 1, 1))
    follower.step(append(2, (1, 1), (Entry(2, 2, b"new"),)))
    assert [(e.index, e.term) for e in follower.log.entries] == [(1, 1), (2, 2)]
    assert follower.ready().entries == [Entry(2, 2, b"new")]


def test_commit_follows_the_leader_but_not_past_the_last_new_entry() -> None:
    """Figure 2 (AppendEntries receiver, 5): commitIndex = min(leaderCommit, index of last new entry)."""
    follower = make("n1", term=1, entries=log_of(1, 1, 1, 1))
    follower.step(append(1, (0, 0), log_of(1, 1), commit=4))
    assert follower.log.committed == 2  # entries 3 and 4 were not vouched for by this message


# --- RequestVote receiver ----------------------------------------------------------------------------------


def vote_request(term: int, src: str, last: tuple[int, int], pre_vote: bool = False) -> RequestVote:
    return RequestVote(term, src, "n1", last[0], last[1], pre_vote=pre_vote)


def granted(node: Raft, request: RequestVote) -> bool:
    node.step(request)
    reply = only(node.ready())
    assert isinstance(reply, RequestVoteReply)
    return reply.granted


def test_a_vote_request_of_an_older_term_is_not_granted() -> None:
    """Figure 2 (RequestVote receiver, 1): reply false if term < currentTerm."""
    node = make("n1", term=5)
    node.step(vote_request(4, "n2", (9, 4)))
    assert not any(isinstance(m, RequestVoteReply) and m.granted for m in node.ready().messages)


def test_one_vote_per_term() -> None:
    """§5.2, Figure 2 (RequestVote receiver, 2): at most one vote per term, first come first served."""
    node = make("n1", term=1)
    assert granted(node, vote_request(2, "n2", (0, 0)))
    assert granted(node, vote_request(2, "n2", (0, 0)))  # a retried request gets the same answer
    assert not granted(node, vote_request(2, "n3", (0, 0)))


@pytest.mark.parametrize(
    ("last", "expected"), [((5, 1), False), ((1, 2), False), ((2, 2), True), ((1, 3), True)]
)
def test_a_vote_needs_a_log_at_least_as_up_to_date(last: tuple[int, int], expected: bool) -> None:
    """§5.4.1: a vote goes only to a candidate whose log is at least as up to date."""
    node = make("n1", term=2, entries=log_of(1, 2))
    assert granted(node, vote_request(3, "n2", last)) is expected


# --- the known traps ---------------------------------------------------------------------------------------


def test_a_vote_is_persisted_with_its_term_before_it_is_sent_and_survives_a_crash() -> None:
    """Figure 2 (persistent state): votedFor reaches stable storage before the vote is sent."""
    cluster = Cluster(3, pre_vote=False)
    cluster.deliver(RequestVote(4, "n2", "n1", 0, 0))
    store = cluster.nodes["n1"].store.load()
    assert store.hard_state.term == 4 and store.hard_state.vote == "n2"
    assert [m for m in cluster.outbox if isinstance(m, RequestVoteReply) and m.granted]
    cluster.crash("n1")
    cluster.restart("n1")
    cluster.take()
    cluster.deliver(RequestVote(4, "n3", "n1", 0, 0))
    assert not any(isinstance(m, RequestVoteReply) and m.granted for m in cluster.outbox)


def test_a_single_ready_carries_the_new_term_and_the_vote_together() -> None:
    """Figure 2 (persistent state): a term and the vote cast in it are persisted as one."""
    node = make("n1", term=1)
    node.step(vote_request(6, "n2", (0, 0)))
    ready = node.ready()
    assert ready.hard_state == HardState(term=6, vote="n2", commit=0)
    assert isinstance(only(ready), RequestVoteReply)


def test_a_late_or_duplicated_append_whose_entries_match_never_truncates() -> None:
    """Figure 2 (AppendEntries receiver, 3): only a *conflicting* entry truncates; a stale duplicate must not."""
    follower = make("n1", term=1)
    early = append(1, (0, 0), log_of(1, 1))
    follower.step(early)
    follower.step(append(1, (2, 1), (Entry(3, 1, b"e3"), Entry(4, 1, b"e4"))))
    follower.ready()
    follower.step(early)  # the first batch again, late
    ready = follower.ready()
    assert follower.log.last_index == 4 and not ready.entries
    reply = only(ready)
    assert isinstance(reply, AppendEntriesReply) and reply.success and reply.match_index == 2


def test_vote_replies_from_an_older_term_are_ignored() -> None:
    """§5.1: replies of an older term are stale and ignored."""
    candidate = make("n1", FIVE, term=1, pre_vote=False)
    run_out_timer(candidate)  # candidate of term 2
    run_out_timer(candidate)  # no answers: candidate of term 3
    for voter in ("n2", "n3"):
        candidate.step(RequestVoteReply(2, voter, "n1", granted=True))
    assert (candidate.role, candidate.term) == (Role.CANDIDATE, 3)
    for voter in ("n2", "n3"):
        candidate.step(RequestVoteReply(3, voter, "n1", granted=True))
    assert (candidate.role, candidate.term) == (Role.LEADER, 3)


def test_a_leader_commit_never_moves_backwards() -> None:
    """§5.3: the commit index only grows."""
    cluster = elected()
    cluster.act("n1", lambda raft: raft.propose(b"x"))
    cluster.deliver_all()
    leader = cluster.raft("n1")
    committed = leader.log.committed
    # Stale answers (an old success, a rejection) and a heartbeat of a lower commit change nothing.
    cluster.deliver(AppendEntriesReply(leader.term, "n2", "n1", success=True, match_index=1))
    cluster.deliver(AppendEntriesReply(leader.term, "n3", "n1", success=False, match_index=1))
    settle(cluster)
    cluster.deliver(AppendEntries(leader.term, "n1", "n2", 1, leader.term, (), 1))
    assert leader.log.committed == committed
    assert cluster.raft("n2").log.committed == committed


# --- scenarios ---------------------------------------------------------------------------------------------


def test_figure_8_an_old_term_entry_is_not_committed_by_counting_replicas() -> None:
    """§5.4.2, Figure 8: a leader never commits an entry of an older term by counting replicas."""
    cluster = figure_8_cluster()
    assert figure_8(cluster) == 1, "an entry of an older term was committed by counting replicas"
    n5 = cluster.raft("n5")
    assert n5.log.term_at(2) == 2 and n5.log.committed >= 2
    assert cluster.raft("n3").log.term_at(2) == 2  # overwritten, safely: it was never committed


def test_figure_8_with_commit_by_counting_breaks_safety(monkeypatch: pytest.MonkeyPatch) -> None:
    """§5.4.2, Figure 8: without that rule a committed entry is overwritten."""
    monkeypatch.setattr(Raft, "_may_commit", lambda self, index: True)
    with pytest.raises(SafetyViolation, match="leader completeness"):
        figure_8(figure_8_cluster())


def test_a_stale_leader_after_a_partition_commits_nothing_and_steps_down() -> None:
    """§5.1, §5.4.2: a leader cut off commits nothing, and steps down when it hears the newer term."""
    cluster = elected(check_quorum=False)
    old = cluster.raft("n1")
    cluster.elect("n2", voters=["n3"])  # n1 is cut off and does not notice
    cluster.deliver_all(lambda m: "n1" not in (m.src, m.dst))
    index, _ = cluster.act("n1", lambda raft: raft.propose(b"lost"))
    cluster.read("n1", "stale-read")
    cluster.take(lambda m: m.src == "n1")  # the partition eats the stale leader's messages
    assert old.role is Role.LEADER and old.log.committed < index
    cluster.tick("n2", cluster.raft("n2").config.heartbeat_ticks)  # the partition heals
    cluster.deliver_all()
    assert (old.role, old.term, old.leader_id) == (Role.FOLLOWER, 2, "n2")
    assert old.log.term_at(index) != 1, "the stale leader's uncommitted entry was replaced"
    assert b"lost" not in cluster.checker.commands
    assert cluster.nodes["n1"].answered_reads == [ReadState("stale-read", None)]


def test_check_quorum_makes_a_cut_off_leader_step_down() -> None:
    """Thesis §6.2: a leader that has not heard from a majority for an election timeout steps down."""
    cluster = elected()
    leader = cluster.raft("n1")
    cluster.tick("n1", 2 * leader.config.election_ticks)
    assert leader.role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        leader.propose(b"x")


def isolate_and_rejoin(cluster: Cluster) -> int:
    """Cut n3 off for many election timeouts while n1 keeps leading n2; returns n3's term before rejoining."""
    for _ in range(50):
        cluster.tick("n3")
        cluster.tick("n1")
        cluster.take(lambda m: "n3" in (m.src, m.dst))
        cluster.deliver_all()
    term = cluster.raft("n3").term
    for _ in range(3 * cluster.raft("n3").config.election_ticks):  # back: its next campaign reaches everyone
        cluster.tick("n3")
        cluster.deliver_all(lambda m: m.src == "n3" or isinstance(m, RequestVoteReply))
    return term


def test_pre_vote_stops_a_rejoining_node_from_disrupting_the_leader() -> None:
    """Thesis §9.6: a rejoining node's pre-vote fails, so the healthy leader keeps its term."""
    cluster = elected()
    term = isolate_and_rejoin(cluster)
    assert term == 1, "pre-vote kept the isolated node's term"
    assert cluster.raft("n1").role is Role.LEADER and cluster.raft("n1").term == 1
    cluster.tick("n1")
    cluster.deliver_all()
    assert cluster.raft("n3").leader_id == "n1"


def test_without_pre_vote_a_rejoining_node_does_disrupt() -> None:
    """Thesis §9.6: without pre-vote, the rejoining node's higher term deposes the leader."""
    cluster = elected(pre_vote=False, check_quorum=False)
    assert isolate_and_rejoin(cluster) > 1
    assert cluster.raft("n1").term > 1 and cluster.raft("n1").role is not Role.LEADER


def test_a_follower_far_behind_is_caught_up_by_snapshot() -> None:
    """§7: a follower that needs compacted entries receives the leader's snapshot."""
    cluster = elected()
    crash_n3_while_n1_commits(cluster)
    cluster.nodes["n1"].compact()
    cluster.restart("n3")
    sent = catch_up(cluster)
    assert any(isinstance(m, InstallSnapshot) for m in sent)
    assert cluster.nodes["n3"].machine == cluster.nodes["n1"].machine
    assert cluster.nodes["n3"].store.load().snapshot == cluster.raft("n1").log.snapshot


def test_leadership_transfer_hands_over_to_the_target() -> None:
    """Thesis §3.10: the leader brings the target up to date, then TimeoutNow starts its election."""
    cluster = elected()
    cluster.act("n1", lambda raft: raft.transfer_leadership("n2"))
    with pytest.raises(NotLeader):
        cluster.raft("n1").propose(b"paused during the transfer")
    cluster.deliver_all()
    assert cluster.raft("n2").role is Role.LEADER and cluster.raft("n1").leader_id == "n2"


def test_read_index_answers_at_the_commit_index_after_a_quorum_round() -> None:
    """Thesis §6.4: ReadIndex -- record the commit index, confirm leadership with a quorum round."""
    cluster = elected()
    cluster.read("n1", "r")
    assert cluster.nodes["n1"].answered_reads == []
    cluster.deliver_all()
    assert cluster.nodes["n1"].answered_reads == [ReadState("r", cluster.raft("n1").log.committed)]


def snapshot_to_send(cluster: Cluster) -> None:
    """n3 crashes and misses entries that n1 then compacts away; n3 restarts and needs n1's snapshot."""
    crash_n3_while_n1_commits(cluster)
    cluster.nodes["n1"].compact()
    cluster.restart("n3")
    cluster.act("n1", lambda raft: raft.report_unreachable("n3"))  # as the transport would


def test_a_snapshot_in_flight_is_not_resent_on_every_heartbeat() -> None:
    """§7: one InstallSnapshot in flight per follower; heartbeats do not resend it."""
    cluster = elected()
    snapshot_to_send(cluster)
    held: list[AnyMessage] = []  # n3 is slow to install the snapshot: its first copy is held back
    for _ in range(cluster.raft("n1").config.election_ticks // 2):
        cluster.tick("n1")
        while batch := cluster.take():
            held += [m for m in batch if isinstance(m, InstallSnapshot)]
            for message in batch:
                if not isinstance(message, InstallSnapshot):
                    cluster.deliver(message)
    assert len(held) == 1  # heartbeat replies from n3 did not trigger a copy each
    cluster.deliver(held[0])
    cluster.deliver_all()
    assert cluster.nodes["n3"].machine == cluster.nodes["n1"].machine


def test_read_rounds_do_not_count_as_a_stalled_follower() -> None:
    """Thesis §6.4: ReadIndex heartbeats do not hurry the leader's stall detection."""
    cluster = elected()
    cluster.act("n1", partial(Raft.propose, data=b"in flight"))
    in_flight = cluster.take(lambda m: isinstance(m, AppendEntries) and m.dst == "n3" and bool(m.entries))
    for i in range(3 * cluster.raft("n1").config.election_ticks):  # many read rounds, no tick at all
        cluster.read("n1", f"r{i}")
        cluster.deliver_all(lambda m: not (isinstance(m, AppendEntries) and m.dst == "n3" and m.entries))
    assert cluster.raft("n1").progress["n3"].state.value == "replicate"  # still pipelining to n3
    assert in_flight
