"""Raft's safety properties, checked incrementally after every step of a simulation.

Every check is cheap enough to run after each message and tick:

- election safety: a leader holds the votes of a quorum of its configuration in its term (a majority of each
  half while joint), and each node votes once per term (across crashes too; a vote counts once persisted or
  sent), and its durable term never goes back, so the first leader seen in a term is the only one it may ever
  have; and its configuration overlaps the latest committed one (below);
- commitment: whenever a leader advances its commit index, the entry there is durably stored on a quorum of
  the leader's configuration -- learners, and a leader that is not a voter, do not count;
- no two disjoint majorities: a configuration a leader appends has quorums that overlap those of the latest
  configuration committed in the cluster by a leader of its term or earlier, so two groups of servers can
  never each elect a leader or commit on their own (one voter more or less, or a joint configuration with it
  as one half);
- log matching, by induction: an entry is identified by (index, term); every copy of it, on any node, at any
  time, must carry the same command and follow an entry of the same term. That makes two logs that agree on
  (index, term) agree on everything before it, without ever comparing whole logs;
- leader completeness: the highest index committed in each term is in the log of every leader of a later
  term, checked when a leader appears and when a commit point appears;
- state machine safety: each replica's digest after applying index ``i`` equals everyone else's;
- commit monotonicity per node (a restart reloads at least the persisted commit index);
- linearizable reads: a ReadIndex is never below anything committed before the read was asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

from raftkv.raft.core import Raft
from raftkv.raft.membership import Membership
from raftkv.raft.types import (
    AnyMessage,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    ReadState,
    RequestVoteReply,
    Role,
    Snapshot,
)
from raftkv.sim.machine import DigestMachine


class SafetyViolation(AssertionError):
    """A Raft safety property failed: always a bug in the core (or a deliberate mutation of it)."""


Holders = Callable[[int, int], set[NodeId]]
"""The nodes whose persisted state holds the entry (index, term)."""


class SafetyChecker:
    def __init__(self, holders: Holders) -> None:
        self.holders = holders
        # index -> (term of the leader that committed it, the configuration committed there)
        self.committed_configs: dict[int, tuple[int, Membership]] = {0: (0, Membership())}
        self.leaders: dict[int, NodeId] = {}
        self.checked_leaders: set[int] = set()
        self.entries: dict[
            tuple[int, int], tuple[int, bytes | None]
        ] = {}  # (index, term) -> (prev term, data)
        self.digests: list[bytes] = [b""]  # digests[i]: the state after applying index i
        self.commands: list[bytes | None] = [None]  # commands[i]: the command applied at index i
        self.commit_points: dict[int, int] = {}  # term -> highest committed index of that term
        self.max_committed = 0
        self.commits: dict[NodeId, int] = {}
        self.terms: dict[NodeId, int] = {}
        self.votes: dict[tuple[NodeId, int], NodeId] = {}  # (voter, term) -> the one candidate it voted for
        self.read_floors: dict[object, int] = {}

    # --- log matching ------------------------------------------------------------------------------------

    def on_persist(
        self,
        node: NodeId,
        raft: Raft,
        hard_state: HardState | None,
        entries: Iterable[Entry],
        stored_term_at: Callable[[int], int | None],
    ) -> None:
        """A save became durable: ``stored_term_at`` reads the node's store after it (the core may have moved
        on meanwhile, while the save was pending)."""
        if hard_state is not None:
            self._check_term_and_vote(node, hard_state.term, hard_state.vote)
        prev_term: int | None = None
        for entry in entries:
            if entry.kind is EntryKind.MEMBERSHIP and raft.role is Role.LEADER and entry.term == raft.term:
                self._check_overlaps_committed(node, raft, entry)
            if prev_term is None:
                prev_term = stored_term_at(entry.index - 1)
                if prev_term is None:
                    raise SafetyViolation(f"{node} persisted entry {entry.index} with a gap before it")
            known = self.entries.setdefault((entry.index, entry.term), (prev_term, entry.data))
            if known != (prev_term, entry.data):
                raise SafetyViolation(
                    f"log matching: {node} holds entry ({entry.index}, term {entry.term}) = "
                    f"(after term {prev_term}, {entry.data!r}), elsewhere it is (after term {known[0]}, "
                    f"{known[1]!r})"
                )
            prev_term = entry.term

    # --- state machine safety ----------------------------------------------------------------------------

    def on_apply(self, node: NodeId, machine: DigestMachine, entry: Entry) -> None:
        machine.apply(entry.index, entry.command)
        if entry.index < len(self.digests):
            if self.digests[entry.index] != machine.digest:
                raise SafetyViolation(
                    f"state machine safety: {node} applied {entry.data!r} at {entry.index}, another node "
                    f"applied {self.commands[entry.index]!r} there (or the histories before it differ)"
                )
        else:
            self.digests.append(machine.digest)
            self.commands.append(entry.data)

    def on_restore(self, node: NodeId, snapshot: Snapshot, data: BinaryIO) -> DigestMachine:
        machine = DigestMachine()
        machine.restore(data)
        if machine.applied_index != snapshot.index:
            raise SafetyViolation(
                f"{node}: the data of snapshot {snapshot.index} holds index {machine.applied_index}"
            )
        if snapshot.index >= len(self.digests) or self.digests[snapshot.index] != machine.digest:
            raise SafetyViolation(f"{node} restored a snapshot at {snapshot.index} no replica ever applied")
        return machine

    def applied_command(self, index: int) -> bytes | None:
        """The command applied at ``index`` (None if nothing is applied there yet, or a no-op)."""
        return self.commands[index] if index < len(self.commands) else None

    def applied_through(self) -> int:
        return len(self.digests) - 1

    # --- per-step checks ---------------------------------------------------------------------------------

    def on_restart(self, node: NodeId, raft: Raft, persisted_commit: int) -> None:
        if raft.log.committed < persisted_commit:
            raise SafetyViolation(
                f"{node} restarted at commit {raft.log.committed} < persisted {persisted_commit}"
            )
        self.commits[node] = raft.log.committed

    def on_send(self, message: AnyMessage) -> None:
        """A granted vote is cast when its reply leaves, durable or not (a lost vote can be cast twice)."""
        if isinstance(message, RequestVoteReply) and message.granted and not message.pre_vote:
            self._check_vote(message.src, message.term, message.dst)

    def after_step(self, rafts: Sequence[Raft]) -> None:
        leaders = [raft for raft in rafts if raft.role is Role.LEADER]
        for raft in leaders:
            first = self.leaders.setdefault(raft.term, raft.id)
            if first != raft.id:
                raise SafetyViolation(f"election safety: {first} and {raft.id} both led term {raft.term}")
            if raft.term not in self.checked_leaders:  # a leader's log only grows: check it once in full
                self.checked_leaders.add(raft.term)
                self._check_elected(raft)
                for term, index in self.commit_points.items():
                    self._check_complete(raft, index, term)
        for raft in rafts:
            if raft.role is Role.LEADER and raft.log.committed > self.commits.get(raft.id, 0):
                self._check_committed_on_quorum(raft)
            point_term = self._advance_commit(raft)
            if point_term is not None:
                for leader in leaders:
                    self._check_complete(leader, raft.log.committed, point_term)

    def _check_term_and_vote(self, node: NodeId, term: int, vote: NodeId | None) -> None:
        """Figure 2's persistent state: a node's durable term never goes back, and it votes once per term --
        across crashes too, which is what persisting ``votedFor`` is for. (A term or vote only in memory may
        be lost in a crash: nothing was promised on it, since every message waits for the persist.)"""
        if term < self.terms.get(node, 0):
            raise SafetyViolation(f"{node}'s term went back from {self.terms[node]} to {term}")
        self.terms[node] = term
        if vote is not None:
            self._check_vote(node, term, vote)

    def _check_vote(self, node: NodeId, term: int, vote: NodeId) -> None:
        first = self.votes.setdefault((node, term), vote)
        if first != vote:
            raise SafetyViolation(f"{node} voted for {first} and then {vote} in term {term}")

    def _check_elected(self, leader: Raft) -> None:
        """A leader holds the votes of a quorum of its configuration, cast in its own term (each recorded as
        it was cast; its own vote may still be on its way to the disk, which nothing it does as leader
        outruns)."""
        membership = leader.membership
        voted = {voter for voter in membership.members if self.votes.get((voter, leader.term)) == leader.id}
        if leader.vote == leader.id and leader.id in membership.members:
            voted.add(leader.id)
        if not is_quorum(membership, voted):
            raise SafetyViolation(
                f"{leader.id} leads term {leader.term} with the votes of {sorted(voted)} only, not a quorum of "
                f"{_describe(membership)}"
            )
        committed = self._latest_committed_config(leader.term)
        if committed.voters and not overlapping(membership, committed):
            raise SafetyViolation(
                f"{leader.id} was elected in term {leader.term} under {_describe(membership)}, whose majorities "
                f"need not meet those of the committed {_describe(committed)}"
            )

    def _check_committed_on_quorum(self, leader: Raft) -> None:
        """The entry at a leader's new commit index is durably held by a quorum of its configuration."""
        index = leader.log.committed
        term = leader.log.term_at(index)
        assert term is not None
        holders = self.holders(index, term)
        if not is_quorum(leader.membership, holders):
            raise SafetyViolation(
                f"{leader.id} committed entry {index} (term {term}) held only by {sorted(holders)}, not a quorum "
                f"of {_describe(leader.membership)}"
            )
        self._note_committed_config(leader)

    def _note_committed_config(self, leader: Raft) -> None:
        """Record the configuration in force at the leader's commit index as committed."""
        committed = leader.log.committed
        held = [index for index, _ in leader.log.configs if index <= committed]
        config_index = held[-1] if held else leader.log.snapshot_index
        self.committed_configs.setdefault(config_index, (leader.term, leader.log.membership_at(committed)))

    def _latest_committed_config(self, term: int) -> Membership:
        """The latest configuration committed by a leader of ``term`` or earlier. What leaders of later terms
        commit is not the business of a leader of ``term``: a stale leader may append, and can never commit, a
        configuration that the cluster has already moved past."""
        known = [index for index, (by, _) in self.committed_configs.items() if by <= term]
        return self.committed_configs[max(known)][1]

    def _check_overlaps_committed(self, node: NodeId, leader: Raft, entry: Entry) -> None:
        """A new configuration overlaps the latest configuration committed so far (no two disjoint majorities)."""
        assert entry.data is not None
        self._note_committed_config(leader)
        appended = Membership.decode(entry.data)
        latest = self._latest_committed_config(leader.term)
        if latest.voters and not overlapping(appended, latest):
            raise SafetyViolation(
                f"{node} appended {_describe(appended)} at {entry.index}, whose majorities need not meet those of "
                f"the committed {_describe(latest)}"
            )

    def _advance_commit(self, raft: Raft) -> int | None:
        """Record ``raft``'s commit index; its term when it is a new highest commit point of that term."""
        committed, before = raft.log.committed, self.commits.get(raft.id, 0)
        if committed < before:
            raise SafetyViolation(f"{raft.id}'s commit index went back from {before} to {committed}")
        if committed == before:
            return None
        self.commits[raft.id] = committed
        self.max_committed = max(self.max_committed, committed)
        term = raft.log.term_at(committed)
        assert term is not None, "the commit index is never below the snapshot"
        if committed <= self.commit_points.get(term, 0):
            return None
        self.commit_points[term] = committed
        return term

    def _check_complete(self, leader: Raft, index: int, term: int) -> None:
        """Leader completeness for one commit point (an entry compacted into a snapshot is not visible)."""
        if term < leader.term and index >= leader.log.snapshot_index and leader.log.term_at(index) != term:
            raise SafetyViolation(
                f"leader completeness: leader {leader.id} of term {leader.term} lacks entry {index} of term "
                f"{term}, which was committed"
            )

    # --- linearizable reads ------------------------------------------------------------------------------

    def on_read_requested(self, ctx: object) -> None:
        self.read_floors[ctx] = self.max_committed

    def forget_read(self, ctx: object) -> None:
        """A read the node refused at once (it cannot serve reads now): it will never be answered."""
        del self.read_floors[ctx]

    def on_read_state(self, node: NodeId, state: ReadState) -> None:
        floor = self.read_floors.pop(state.ctx)
        if state.index is not None and state.index < floor:
            raise SafetyViolation(
                f"linearizability: {node} answered read {state.ctx!r} at index {state.index}, but {floor} was "
                f"committed before the read was asked for"
            )


def is_quorum(membership: Membership, nodes: set[NodeId]) -> bool:
    """A majority of the voters, of both halves while joint -- worked out here, apart from the core's own
    quorum code, so that a broken quorum rule in the core cannot also blind the checker."""
    return all(2 * len(half & nodes) > len(half) for half in _halves(membership))


def overlapping(a: Membership, b: Membership) -> bool:
    """Whether every quorum of ``a`` meets every quorum of ``b``: true when some half of one and some half of
    the other are voter sets whose majorities always meet (a joint configuration's quorum contains a majority
    of each of its halves)."""
    return any(_majorities_meet(x, y) for x in _halves(a) for y in _halves(b))


def _halves(membership: Membership) -> list[frozenset[NodeId]]:
    return [membership.voters, membership.outgoing] if membership.joint else [membership.voters]


def _majorities_meet(x: frozenset[NodeId], y: frozenset[NodeId]) -> bool:
    """No majority of ``x`` is disjoint from a majority of ``y``: filling both from outside the other first,
    the two majorities need more of the shared servers than there are."""
    need_x = max(0, len(x) // 2 + 1 - len(x - y))  # a majority of x is more than half of it
    need_y = max(0, len(y) // 2 + 1 - len(y - x))
    return need_x + need_y > len(x & y)


def _describe(membership: Membership) -> str:
    voters = ",".join(sorted(membership.voters))
    outgoing = f" + old {','.join(sorted(membership.outgoing))}" if membership.joint else ""
    learners = f" (learners {','.join(sorted(membership.learners))})" if membership.learners else ""
    return f"voters {{{voters}}}{outgoing}{learners}"
