"""Mutation check: break one Raft rule on purpose and the simulator must notice within the CI seed budget.

Each mutation is a small monkeypatch of the core. ``SEEDS_NEEDED`` records how many CI runs (in ``ci_seeds()``
order) each took to fail when it was last measured; the test fails when a mutation needs more than twice that
(or is missed altogether), so a simulator that grows weaker is noticed long before it misses a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import pytest

from raftkv.raft import membership
from raftkv.raft.core import Config, Raft
from raftkv.raft.log import RaftLog
from raftkv.raft.membership import Membership
from raftkv.raft.types import (
    AnyMessage,
    AppendEntries,
    Entry,
    HardState,
    ReadState,
    RequestVote,
    RequestVoteReply,
)
from raftkv.sim import SCENARIOS, SimFailure, ci_seeds, run_scenario, run_seed

_handle_request_vote = Raft._handle_request_vote
_step = Raft.step
_handle_append = Raft._handle_append


def vote_twice_in_a_term(self: Raft, m: RequestVote) -> None:
    """Grants any up-to-date candidate of our term, forgetting whom we already voted for."""
    if m.pre_vote:
        _handle_request_vote(self, m)
        return
    granted = self._log_up_to_date(m) and m.term == self.term
    if granted:
        self.vote = m.src
    self._send(RequestVoteReply(term=self.term, src=self.id, dst=m.src, granted=granted))


def truncate_on_matching_duplicate(self: RaftLog, entries: tuple[Entry, ...]) -> None:
    """Drops everything after a (possibly stale) batch even when its entries already match."""
    fresh = [entry for entry in entries if entry.index > self.snapshot_index]
    if fresh:
        del self.entries[fresh[0].index - self.first_index :]
        self.entries.extend(fresh)
        self.unstable = min(self.unstable, fresh[0].index)


def count_stale_vote_replies(self: Raft, m: AnyMessage) -> None:
    if isinstance(m, RequestVoteReply) and not m.pre_vote and m.term < self.term:
        self._handle_vote_reply(m)
        return
    _step(self, m)


def follower_commits_past_what_it_verified(self: Raft, m: AppendEntries) -> None:
    _handle_append(self, m)
    self.log.commit_to(m.commit)


def answer_reads_at_once(self: Raft, ctx: object) -> None:
    self._read_states.append(ReadState(ctx, self.log.committed))


def change_while_another_is_in_flight(self: Raft) -> str | None:
    """Keeps only the rule that the leader has committed in its term."""
    return "not yet" if self.log.term_at(self.log.committed) != self.term else None


def change_before_committing_in_the_term(self: Raft) -> str | None:
    """Keeps only the one-change-at-a-time rule (the bug of the first single-server change algorithm)."""
    return "in progress" if self.log.last_config_index > self.log.committed else None


def lease_through_handovers(self: Raft) -> bool:
    """The lease kept while TimeoutNow makes another server campaign past the voters' lease."""
    if not self.config.check_quorum or self.log.term_at(self.log.committed) != self.term:
        return False
    acked = [seq for seq in self.sent_at if self._acked_by_quorum(seq)]
    return bool(acked) and self.ticks < self.sent_at[max(acked)] + self.config.lease_ticks


def any_answer_will_do(self: Raft, seq: int, index: int | None) -> None:
    """A follower takes whatever read-index answer arrives for whatever it asked."""
    if self.asked is not None:
        self.asked.seq = seq
    _answer_asked(self, seq, index)


def restarted_servers_vote_at_once(self: Raft) -> bool:
    return (
        self.config.check_quorum
        and self.leader_id is not None
        and self.election_elapsed < self.config.election_ticks
    )


_answer_asked = Raft._answer_asked
_committed_index = Membership.committed_index


def learners_count_for_commit(self: Membership, match: Mapping[str, int]) -> int:
    as_voters = Membership(self.voters | self.learners, self.outgoing, addresses=self.addresses)
    return _committed_index(as_voters, match)


Mutation = tuple[object, str, object]
MUTATIONS: dict[str, Mutation] = {
    "commit by counting, without the current-term rule": (Raft, "_may_commit", lambda self, index: True),
    "vote without the log restriction": (Raft, "_log_up_to_date", lambda self, m: True),
    "vote twice in a term": (Raft, "_handle_request_vote", vote_twice_in_a_term),
    "vote not persisted": (
        Raft,
        "hard_state",
        property(lambda self: HardState(term=self.term, vote=None, commit=self.log.committed)),
    ),
    "vote replies of older terms counted": (Raft, "step", count_stale_vote_replies),
    "duplicate AppendEntries truncates": (RaftLog, "merge", truncate_on_matching_duplicate),
    "follower commit not bounded by its match": (
        Raft,
        "_handle_append",
        follower_commits_past_what_it_verified,
    ),
    "ReadIndex without a quorum round": (Raft, "_queue_read", answer_reads_at_once),
    "ReadIndex before the leader commits in its term": (
        Raft,
        "read_index",
        lambda self, ctx: self._queue_read(ctx),
    ),
    "quorum of a minority": (membership, "quorum_size", lambda voters: voters // 2),
    "two membership changes in flight at once": (Raft, "_change_refusal", change_while_another_is_in_flight),
    "a membership change before the leader committed in its term": (
        Raft,
        "_change_refusal",
        change_before_committing_in_the_term,
    ),
    "a learner counted in the commit quorum": (Membership, "committed_index", learners_count_for_commit),
    "a joint configuration that needs only the new majority": (
        Membership,
        "_halves",
        lambda self: (self.voters,),
    ),
    "a lease that outlasts the election timeout": (
        Config,
        "lease_ticks",
        property(lambda self: 3 * self.election_ticks),
    ),
    "lease reads while handing over leadership": (Raft, "_lease_holds", lease_through_handovers),
    "a follower takes any read-index answer": (Raft, "_answer_asked", any_answer_will_do),
    "restarted servers vote at once": (Raft, "_in_lease", restarted_servers_vote_at_once),
    "a leader counts its own entries before they are durable": (
        Raft,
        "_own_match",
        lambda self: self.log.last_index,
    ),
    "every message sent before the persist": (Raft, "_may_precede_persist", lambda self, m, hs: True),
}

# Runs (the scenarios, then ci_seeds() in order) each mutation needed to fail, as measured; the test allows
# twice as many.
SEEDS_NEEDED = {
    "commit by counting, without the current-term rule": 1,
    "vote without the log restriction": 2,
    "vote twice in a term": 1,
    "vote not persisted": 12,
    "vote replies of older terms counted": 6,
    "duplicate AppendEntries truncates": 7,
    "follower commit not bounded by its match": 6,
    "ReadIndex without a quorum round": 3,
    "ReadIndex before the leader commits in its term": 8,
    "quorum of a minority": 1,
    "two membership changes in flight at once": 76,
    "a membership change before the leader committed in its term": 2,
    "a learner counted in the commit quorum": 118,
    "a joint configuration that needs only the new majority": 7,
    "a lease that outlasts the election timeout": 3,
    "lease reads while handing over leadership": 4,
    "a follower takes any read-index answer": 7,
    "restarted servers vote at once": 5,
    "a leader counts its own entries before they are durable": 23,
    "every message sent before the persist": 7,
}


def first_failure(budget: list[tuple[int, int]]) -> tuple[int, str] | None:
    """How many runs the simulator needed to fail (the scripted scenarios first, then the seeds), and how."""
    runs: list[Callable[[], object]] = [partial(run_scenario, name) for name in SCENARIOS]
    runs += [partial(run_seed, seed, nodes) for seed, nodes in budget]
    for count, run in enumerate(runs, start=1):
        try:
            run()
        except SimFailure as failure:
            return count, str(failure)
    return None


@pytest.mark.parametrize("name", MUTATIONS)
def test_simulator_catches_mutation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    owner, attribute, replacement = MUTATIONS[name]
    monkeypatch.setattr(owner, attribute, replacement)
    found = first_failure(ci_seeds())
    assert found is not None, f"the simulator missed the mutation {name!r} over all CI seeds"
    runs, message = found
    assert "replay: python -m raftkv.sim --" in message
    print(f"{name}: caught after {runs} runs (recorded {SEEDS_NEEDED[name]})")
    assert runs <= 2 * SEEDS_NEEDED[name], f"{name!r} took {runs} runs, recorded {SEEDS_NEEDED[name]}"


def test_every_mutation_has_a_record() -> None:
    assert set(SEEDS_NEEDED) == set(MUTATIONS)
