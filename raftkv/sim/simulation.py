"""The randomised simulation: a cluster under a seeded storm of faults, then healed and required to recover.

One seed fixes everything (cluster settings, fault rates, every random choice), so a failure replays exactly
with ``python -m raftkv.sim --seed N --nodes K``. A run has two phases:

1. faults, for ``fault_ticks``: messages dropped, delayed, duplicated, reordered; partitions (symmetric,
   isolating the leader, or one-way); crashes (often of the leader) and restarts from the durable store;
   clients proposing, reading with ReadIndex, compacting into snapshots and transferring leadership; and
   membership changes -- learners added (most to be promoted once caught up), voters removed, learners
   promoted, several voters replaced at once through joint consensus -- among the founding nodes and
   ``SPARES`` servers that start outside the cluster; and slow disks: each Ready's persist completes some
   subticks later, while messages keep arriving (a leader's AppendEntries go out before its own persist);
2. recovery: the network heals (messages still arrive out of order, but within a tick) and every node restarts;
   within ``liveness_timeouts`` election timeouts a leader must exist and
   every command proposed after the heal (retried like a real client when its entry is lost) must be applied
   on every member of the leader's configuration.
"""

from __future__ import annotations

import contextlib
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from raftkv.raft.core import MembershipChangeRefused, NotLeader, Raft
from raftkv.raft.membership import Membership
from raftkv.raft.types import AnyMessage, InstallSnapshot, NodeId, Role
from raftkv.sim.cluster import Cluster, address
from raftkv.sim.network import SUBTICKS, Network


@dataclass(frozen=True, slots=True)
class SimParams:
    fault_ticks: int = 300
    liveness_timeouts: int = 20
    commands_after_heal: int = 3


@dataclass(slots=True)
class SimReport:
    seed: int
    nodes: int
    ticks: int = 0
    terms: int = 0
    committed: int = 0
    crashes: int = 0
    partitions: int = 0
    snapshots_sent: int = 0
    reads: int = 0
    lease_reads: int = 0
    follower_reads: int = 0
    transfers: int = 0
    membership_changes: int = 0
    recovery_ticks: int = 0


class SimFailure(AssertionError):
    """A seed broke a safety or liveness property (or the core raised); the message says how to replay it."""


def replay_command(seed: int, nodes: int) -> str:
    return f"python -m raftkv.sim --seed {seed} --nodes {nodes}"


@dataclass(slots=True)
class _Rates:
    crash: float
    restart: float
    partition: float
    heal: float
    propose: float
    read: float
    transfer: float
    compact: float
    lease_read: float
    follower_read: float
    membership: float
    eager_membership: float  # instead, while the leader has not committed in its term (the refused case)
    crash_after_change: float  # the leader crashes right after appending a configuration


SPARES = 2  # servers outside the founding configuration, which membership changes may bring in


class Simulation(Cluster):
    def __init__(self, seed: int, nodes: int, params: SimParams = SimParams()) -> None:
        self.rng = random.Random(f"raftkv-sim/{nodes}/{seed}")
        rng = self.rng
        self.params = params
        self.report = SimReport(seed, nodes)
        self.network = Network(rng)
        self.network.drop_rate = rng.uniform(0, 0.15)
        self.network.duplicate_rate = rng.uniform(0, 0.1)
        self.network.max_delay = rng.randint(1, 3 * SUBTICKS)
        self.network.straggler_rate = rng.uniform(0, 0.05)
        # Short election timeouts against long delays make for many terms and split votes.
        election_ticks = rng.choice((3, 5, 10))
        self.network.straggler_delay = 4 * election_ticks * SUBTICKS  # late enough to cross several terms
        self.election_ticks = election_ticks
        self.rates = _Rates(
            crash=rng.uniform(0, 0.03),
            restart=rng.uniform(0.03, 0.2),
            partition=rng.uniform(0, 0.03),
            heal=rng.uniform(0.02, 0.1),
            propose=rng.uniform(0.2, 1.0),
            read=rng.uniform(0, 0.2),
            transfer=rng.uniform(0, 0.02),
            compact=rng.uniform(0, 0.03),
            lease_read=rng.uniform(0, 0.2),
            follower_read=rng.uniform(0, 0.2),
            membership=rng.uniform(0, 0.06),
            eager_membership=rng.uniform(0.2, 1.0),
            crash_after_change=rng.uniform(0, 0.5),
        )
        self.now = 0
        self.serial = 0
        super().__init__(
            nodes,
            seed=f"raftkv-sim/{nodes}/{seed}",
            spares=SPARES,
            election_ticks=election_ticks,
            heartbeat_ticks=rng.randint(1, min(3, election_ticks - 1)),
            max_batch_entries=rng.choice((1, 2, 3, 64)),
            max_inflight=rng.randint(1, 4),
            pre_vote=rng.random() < 0.75,
            check_quorum=rng.random() < 0.75,
        )
        if not self.nodes[self.ids[0]].config.pre_vote:
            # Without pre-vote, servers a change left behind (removed, or stale voters of an old configuration)
            # keep starting elections they cannot win, and each higher term deposes or stalls the servers that
            # could: a liveness limit of membership changes (thesis §4.2.3, §9.6), not a safety one. The node
            # always runs with pre-vote and check-quorum, so changes are simulated with pre-vote only.
            self.rates.membership = self.rates.eager_membership = 0.0
        self.phase = {node_id: rng.randrange(SUBTICKS) for node_id in self.ids}
        self.proposals: dict[bytes, tuple[int, int]] = {}
        self.disk_speed = rng.uniform(0.5, 1.0)  # the chance, each subtick, that a pending persist completes
        for node in self.nodes.values():
            # An fsync is short against an election timeout; with the shortest timeouts, slow disks on top
            # of slow messages leave no time to win an election at all.
            node.slow_disk = election_ticks > 3

    def route(self, message: AnyMessage) -> None:
        if isinstance(message, InstallSnapshot):
            self.report.snapshots_sent += 1
            if self.network.connected(message.src, message.dst) and not self.ship_snapshot_data(message):
                return
        sender = self.nodes[message.src].raft
        if not self.network.send(message, self.now) and sender is not None and self.rng.random() < 0.5:
            sender.report_unreachable(message.dst)

    # --- the run -----------------------------------------------------------------------------------------

    def run(self) -> SimReport:
        tick = 0
        try:
            for tick in range(self.params.fault_ticks):
                self._inject_faults()
                self._act_as_clients()
                self._advance(tick)
            liveness_ticks = self._heal()
            commands = [self._command() for _ in range(self.params.commands_after_heal)]
            for tick in range(self.params.fault_ticks, self.params.fault_ticks + liveness_ticks):
                if self._recovered(commands):
                    break
                self._advance(tick)
            else:
                raise AssertionError(
                    f"liveness: {liveness_ticks} ticks after healing, leader "
                    f"{getattr(self.leader(), 'id', None)}, commands not applied everywhere: "
                    f"{[c for c in commands if not self._applied_everywhere(c)]}"
                )
        except Exception as exc:
            raise SimFailure(
                f"seed {self.report.seed}, {self.report.nodes} nodes, tick {tick}: {exc}\n"
                f"{''.join(traceback.format_exception(exc)[-4:])}"
                f"replay: {replay_command(self.report.seed, self.report.nodes)}"
            ) from exc
        self.report.ticks = tick
        self.report.recovery_ticks = tick - self.params.fault_ticks
        self.report.terms = len(self.checker.leaders)
        self.report.committed = self.checker.max_committed
        return self.report

    def _advance(self, tick: int) -> None:
        """One tick: each live node ticks at its own phase; messages arrive in between, in random order."""
        for sub in range(SUBTICKS):
            self.now = tick * SUBTICKS + sub
            for node_id in self.ids:
                if self.nodes[node_id].pending is not None and self.rng.random() < self.disk_speed:
                    self.persist(node_id)
                if self.phase[node_id] == sub and self.nodes[node_id].up:
                    self.tick(node_id)
            for message in self.network.arrivals(self.now):
                self.deliver(message)

    # --- faults ------------------------------------------------------------------------------------------

    def _inject_faults(self) -> None:
        rng, rates = self.rng, self.rates
        up = [node_id for node_id in self.ids if self.nodes[node_id].up]
        if up and rng.random() < rates.crash:
            leader = self.leader()
            victim = leader.id if leader is not None and rng.random() < 0.5 else rng.choice(up)
            self.crash(victim)
            self.report.crashes += 1
        for node_id in self.ids:
            if not self.nodes[node_id].up and rng.random() < rates.restart:
                self.restart(node_id)
        if rng.random() < rates.partition:
            self._partition()
        elif self.network.blocked and rng.random() < rates.heal:
            self.network.blocked = set()
        for node_id in self.ids:
            if self.nodes[node_id].up and rng.random() < rates.compact:
                self.nodes[node_id].compact()

    def _partition(self) -> None:
        self.report.partitions += 1
        ids = list(self.ids)
        self.rng.shuffle(ids)
        kind = self.rng.randrange(3)
        leader = self.leader()
        if kind == 0 and leader is not None:  # the leader alone, the classic stale-leader setup
            self.network.partition([[leader.id], [i for i in ids if i != leader.id]])
        elif kind == 1:
            self.network.blocked = {(a, b) for a in ids for b in ids if a != b and self.rng.random() < 0.3}
        else:
            cut = self.rng.randint(1, len(ids) - 1)
            self.network.partition([ids[:cut], ids[cut:]])

    def _heal(self) -> int:
        """End the faults; returns the tick budget for recovery: ``liveness_timeouts`` election timeouts, plus
        two ticks (a round trip) per entry the slowest node must catch up on, one entry per batch at worst."""
        self.network.heal()
        for node_id in self.ids:
            if not self.nodes[node_id].up:
                self.restart(node_id)
        rafts = self.live_rafts()
        backlog = max(raft.log.last_index for raft in rafts) - min(raft.log.committed for raft in rafts)
        return self.params.liveness_timeouts * self.election_ticks + 2 * backlog

    # --- clients -----------------------------------------------------------------------------------------

    def _command(self) -> bytes:
        self.serial += 1
        return f"c{self.serial}".encode()

    def _act_as_clients(self) -> None:
        """Talk to whichever node believes it leads (possibly a stale one: that is the point)."""
        rng, rates = self.rng, self.rates
        leaders = [raft.id for raft in self.live_rafts() if raft.role is Role.LEADER]
        if not leaders:
            return
        node_id = rng.choice(leaders)
        if rng.random() < rates.propose:
            command = self._command()
            self._try(node_id, lambda raft: raft.propose(command))
        if rng.random() < rates.read:
            self.report.reads += 1
            self.read(node_id, f"read-{self._command().decode()}")
        if rng.random() < rates.lease_read:
            self.report.lease_reads += 1
            self.read(node_id, f"lease-read-{self._command().decode()}", lease=True)
        followers = [raft.id for raft in self.live_rafts() if raft.role is Role.FOLLOWER and raft.leader_id]
        if followers and rng.random() < rates.follower_read:
            self.report.follower_reads += 1
            with contextlib.suppress(NotLeader):
                self.read(rng.choice(followers), f"follower-read-{self._command().decode()}")
        if rng.random() < rates.transfer:
            voters = [i for i in self.ids if i != node_id and self.raft(node_id).membership.is_voter(i)]
            if voters:
                target = rng.choice(voters)
                self.report.transfers += 1
                self.act(node_id, lambda raft: raft.transfer_leadership(target))
        raft = self.raft(node_id)
        fresh = (
            raft.log.term_at(raft.log.committed) != raft.term
        )  # a new leader, not yet committed in its term
        if rng.random() < (rates.eager_membership if fresh else rates.membership):
            self._change_membership(node_id)

    def _change_membership(self, node_id: NodeId) -> None:
        """Ask the leader for a random change; sometimes it then crashes at once, before all it sent has left,
        leaving the configuration on whichever servers it reached -- the case that makes Raft's rules for
        changes necessary (an uncommitted configuration that a later leader does not know of)."""
        target = self._membership_change(self.raft(node_id).membership)
        if target is None:
            return
        self.report.membership_changes += 1
        try:
            self.act(node_id, lambda raft: raft.change_membership(target))
        except (NotLeader, MembershipChangeRefused):
            return
        if self.rng.random() < self.rates.crash_after_change:
            self.crash(node_id)
            self.report.crashes += 1
            others = [i for i in self.ids if i != node_id]
            reached = self.rng.randint(0, 2)  # often the change reached one server or none
            self.network.lose_in_flight(node_id, set(self.rng.sample(others, len(others) - reached)))

    def _membership_change(self, current: Membership) -> Membership | None:
        """A random change an operator might ask for: add a learner, remove a member, promote a learner, or
        replace several voters at once (a joint configuration)."""
        rng = self.rng
        outsiders = [i for i in self.ids if i not in current.members]
        kind = rng.randrange(6)
        if kind == 0 and outsiders:
            new = rng.choice(outsiders)
            return current.with_learner(new, address(new), promote=rng.random() < 0.7)
        if kind == 5 and outsiders:  # a voter added directly, as §4.2 allows (a learner first is kinder)
            new = rng.choice(outsiders)
            return current.with_learner(new, address(new), promote=False).promoted(new)
        if kind == 1 and len(current.members) > 1:
            return current.without(rng.choice(sorted(current.members)))
        if kind == 2 and current.learners:
            return current.promoted(rng.choice(sorted(current.learners)))
        if kind in (3, 4):
            pool = sorted(current.members | set(outsiders))
            voters = rng.sample(pool, rng.randint(1, min(len(pool), len(current.voters) + 1)))
            learners = sorted(current.learners - set(voters))
            return current.replaced_by({v: address(v) for v in voters}, {n: address(n) for n in learners})
        return None

    def _try(self, node_id: NodeId, propose: Callable[[Raft], tuple[int, int]]) -> tuple[int, int] | None:
        try:
            return self.act(node_id, propose)
        except NotLeader:
            return None

    def _recovered(self, commands: list[bytes]) -> bool:
        """Drive the post-heal client (retrying lost proposals); True once everything is applied everywhere."""
        leader = self.leader()
        for command in commands:
            placed = self.proposals.get(command)
            if placed is not None and self._lost(command, *placed):
                placed = None
            if placed is None and leader is not None:
                placed = self._try(leader.id, partial(Raft.propose, data=command))
                if placed is not None:
                    self.proposals[command] = placed
        return leader is not None and all(self._applied_everywhere(c) for c in commands)

    def _lost(self, command: bytes, index: int, term: int) -> bool:
        if index <= self.checker.applied_through():
            return self.checker.applied_command(index) != command
        leader = self.leader()
        return leader is not None and leader.term > term and leader.log.term_at(index) != term

    def _applied_everywhere(self, command: bytes) -> bool:
        """Applied on every member of the leader's configuration (servers removed from it may lag for good)."""
        placed = self.proposals.get(command)
        leader = self.leader()
        if placed is None or leader is None or self.checker.applied_command(placed[0]) != command:
            return False
        return all(
            self.nodes[member].machine.applied_index >= placed[0] for member in leader.membership.members
        )


def ci_seeds() -> list[tuple[int, int]]:
    """The (seed, nodes) pairs CI runs, 3- and 5-node clusters interleaved: 600 of 3 nodes, 400 of 5."""
    return [(seed, nodes) for seed in range(600) for nodes in (3, 5) if nodes == 3 or seed < 400]


def run_seed(seed: int, nodes: int, params: SimParams = SimParams()) -> SimReport:
    """Run one seed; raises ``SimFailure`` (with the replay command) if any property breaks."""
    return Simulation(seed, nodes, params).run()
