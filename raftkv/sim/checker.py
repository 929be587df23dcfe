"""Raft's safety properties, checked incrementally after every step of a simulation.

Every check is cheap enough to run after each message and tick:

- election safety: a leader holds the votes of a quorum in its term, and each node votes once per term
  (across crashes too), so the first leader seen in a term is the only one it may ever have;
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

from collections.abc import Iterable, Sequence

from raftkv.raft.core import Raft
from raftkv.raft.types import Entry, NodeId, ReadState, Role, Snapshot
from raftkv.sim.machine import DigestMachine


class SafetyViolation(AssertionError):
    """A Raft safety property failed: always a bug in the core (or a deliberate mutation of it)."""


class SafetyChecker:
    def __init__(self) -> None:
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

    def on_persist(self, node: NodeId, raft: Raft, entries: Iterable[Entry]) -> None:
        prev_term: int | None = None
        for entry in entries:
            if prev_term is None:
                prev_term = raft.log.term_at(entry.index - 1)
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
        machine.apply(entry.index, entry.data)
        if entry.index < len(self.digests):
            if self.digests[entry.index] != machine.digest:
                raise SafetyViolation(
                    f"state machine safety: {node} applied {entry.data!r} at {entry.index}, another node "
                    f"applied {self.commands[entry.index]!r} there (or the histories before it differ)"
                )
        else:
            self.digests.append(machine.digest)
            self.commands.append(entry.data)

    def on_restore(self, node: NodeId, snapshot: Snapshot) -> DigestMachine:
        machine = DigestMachine.from_snapshot(snapshot)
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

    def after_step(self, rafts: Sequence[Raft]) -> None:
        for raft in rafts:
            self._check_term_and_vote(raft)
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
            point_term = self._advance_commit(raft)
            if point_term is not None:
                for leader in leaders:
                    self._check_complete(leader, raft.log.committed, point_term)

    def _check_term_and_vote(self, raft: Raft) -> None:
        """Figure 2's persistent state: a node's term never goes back, and it votes once per term -- across
        crashes too, which is what persisting ``votedFor`` is for."""
        if raft.term < self.terms.get(raft.id, 0):
            raise SafetyViolation(f"{raft.id}'s term went back from {self.terms[raft.id]} to {raft.term}")
        self.terms[raft.id] = raft.term
        if raft.vote is not None:
            first = self.votes.setdefault((raft.id, raft.term), raft.vote)
            if first != raft.vote:
                raise SafetyViolation(f"{raft.id} voted for {first} and then {raft.vote} in term {raft.term}")

    def _check_elected(self, leader: Raft) -> None:
        """A leader holds the votes of a quorum cast in its own term (each recorded as it was cast)."""
        voters = leader.config.voters
        votes = sum(self.votes.get((voter, leader.term)) == leader.id for voter in voters)
        if votes <= len(voters) // 2:
            raise SafetyViolation(
                f"{leader.id} leads term {leader.term} with only {votes} votes of that term"
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

    def on_read_state(self, node: NodeId, state: ReadState) -> None:
        floor = self.read_floors.pop(state.ctx)
        if state.index is not None and state.index < floor:
            raise SafetyViolation(
                f"linearizability: {node} answered read {state.ctx!r} at index {state.index}, but {floor} was "
                f"committed before the read was asked for"
            )
