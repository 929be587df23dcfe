"""A cluster of simulated nodes with the safety checker run after every step.

By itself it is a hand-driven harness (messages collect in ``outbox`` until a test delivers or drops them),
used by the focused unit tests; ``Simulation`` routes the messages through a lossy network instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from raftkv.raft.core import Config, NotLeader, Raft
from raftkv.raft.membership import Membership
from raftkv.raft.types import AnyMessage, InstallSnapshot, NodeId, RequestVote, RequestVoteReply, Role
from raftkv.sim.checker import SafetyChecker
from raftkv.sim.node import SimNode

T = TypeVar("T")


def address(node_id: NodeId) -> str:
    """A simulated node's address: the core carries addresses without reading them."""
    return f"sim://{node_id}"


class Cluster:
    """``size`` founding voters (n1, n2, ...) and ``spares`` servers (numbered after them) that start empty,
    outside the configuration, until a membership change adds them."""

    def __init__(self, size: int, seed: str = "cluster", *, spares: int = 0, **options: Any) -> None:
        founders = tuple(f"n{i}" for i in range(1, size + 1))
        self.ids: tuple[NodeId, ...] = founders + tuple(f"n{i}" for i in range(size + 1, size + spares + 1))
        self.checker = SafetyChecker(self.holders)
        self.outbox: list[AnyMessage] = []
        founding = Membership.of(founders, {node_id: address(node_id) for node_id in founders})
        self.nodes = {
            node_id: SimNode(
                Config(id=node_id, **options),
                seed,
                self.checker,
                self.route,
                founding if node_id in founders else None,
            )
            for node_id in self.ids
        }

    # --- driving -----------------------------------------------------------------------------------------

    def route(self, message: AnyMessage) -> None:
        if self.ship_snapshot_data(message):
            self.outbox.append(message)

    def ship_snapshot_data(self, message: AnyMessage) -> bool:
        """Before an InstallSnapshot goes out, its data goes to the receiver, as the real transport ships it.
        False when the sender no longer holds that data (a newer snapshot replaced it while the message
        waited for a persist): the real transport then drops the message, and so must the caller."""
        if not isinstance(message, InstallSnapshot):
            return True
        source = self.nodes[message.src].store
        if source.snapshot_data(message.snapshot) is None:
            return False
        if self.nodes[message.dst].up:
            data = source.open_snapshot(message.snapshot).read()
            self.nodes[message.dst].receive_snapshot_data(message.snapshot, data)
        return True

    def act(self, node_id: NodeId, action: Callable[[Raft], T]) -> T:
        """Run ``action`` on a live node's core, carry out its Ready, then check every safety property."""
        node = self.nodes[node_id]
        assert node.raft is not None, f"{node_id} is down"
        result = action(node.raft)
        node.process()
        self.check()
        return result

    def persist(self, node_id: NodeId) -> None:
        """Complete the pending persist of a node with a slow disk, then carry on as its driver would."""
        node = self.nodes[node_id]
        node.finish_persist()
        node.process()
        self.check()

    def check(self) -> None:
        self.checker.after_step(self.live_rafts())

    def tick(self, node_id: NodeId, times: int = 1) -> None:
        for _ in range(times):
            self.act(node_id, Raft.tick)

    def deliver(self, message: AnyMessage) -> None:
        """Hand ``message`` to its destination (lost if that node is down, or if it is an InstallSnapshot whose
        data the node does not hold: the real node drops those too)."""
        node = self.nodes[message.dst]
        if not node.up or (
            isinstance(message, InstallSnapshot) and not node.holds_snapshot_data(message.snapshot)
        ):
            return
        self.act(message.dst, lambda raft: raft.step(message))

    def holders(self, index: int, term: int) -> set[NodeId]:
        """The nodes whose persisted state holds entry (index, term), in their log or under their snapshot."""
        found = set()
        for node_id, node in self.nodes.items():
            state = node.store.load()
            snapshot = state.snapshot
            if snapshot is not None and snapshot.index >= index:
                found.add(node_id)  # compacted: by log matching the snapshot covers the same entry
            elif any(entry.index == index and entry.term == term for entry in state.entries):
                found.add(node_id)
        return found

    def take(self, predicate: Callable[[AnyMessage], bool] = lambda m: True) -> list[AnyMessage]:
        """Remove and return the queued messages matching ``predicate`` (to deliver later, or to drop)."""
        taken = [m for m in self.outbox if predicate(m)]
        self.outbox = [m for m in self.outbox if not predicate(m)]
        return taken

    def deliver_all(
        self, predicate: Callable[[AnyMessage], bool] = lambda m: True, rounds: int = 100
    ) -> None:
        """Deliver matching messages, and the ones they cause, until none match (the others stay queued)."""
        for _ in range(rounds):
            batch = self.take(predicate)
            if not batch:
                return
            for message in batch:
                self.deliver(message)
        raise AssertionError("messages kept flowing: the cluster does not settle")

    def read(self, node_id: NodeId, ctx: object, *, lease: bool = False) -> None:
        """Ask ``node_id`` for a read index (``lease``: a lease read, on a leader); the checker holds its
        answer to linearizability. Raises NotLeader where the node cannot serve it."""
        self.checker.on_read_requested(ctx)
        try:
            self.act(node_id, lambda raft: raft.lease_read_index(ctx) if lease else raft.read_index(ctx))
        except NotLeader:
            self.checker.forget_read(ctx)
            raise

    def crash(self, node_id: NodeId) -> None:
        self.nodes[node_id].crash()

    def restart(self, node_id: NodeId) -> None:
        self.nodes[node_id].restart()
        self.check()

    # --- queries -----------------------------------------------------------------------------------------

    def raft(self, node_id: NodeId) -> Raft:
        raft = self.nodes[node_id].raft
        assert raft is not None, f"{node_id} is down"
        return raft

    def live_rafts(self) -> list[Raft]:
        return [node.raft for node in self.nodes.values() if node.raft is not None]

    def leader(self) -> Raft | None:
        """The live leader of the highest term, if any."""
        leaders = [raft for raft in self.live_rafts() if raft.role is Role.LEADER]
        return max(leaders, key=lambda raft: raft.term, default=None)

    def elect(self, node_id: NodeId, voters: Iterable[NodeId] | None = None) -> Raft:
        """Let ``node_id`` time out and win an election, exchanging only (pre-)vote messages with ``voters``;
        everything else (the new leader's first AppendEntries included) stays queued for the caller."""
        raft = self.campaign(node_id, voters)
        if raft.role is not Role.LEADER:
            raise AssertionError(f"{node_id} did not win an election")
        return raft

    def campaign(self, node_id: NodeId, voters: Iterable[NodeId] | None = None) -> Raft:
        """``elect``, but the campaign may fail: returns the node's core, leader or not."""
        group = {node_id, *(voters if voters is not None else self.ids)}

        def ballot(m: AnyMessage) -> bool:
            return isinstance(m, RequestVote | RequestVoteReply) and m.src in group and m.dst in group

        raft = self.raft(node_id)
        for _ in range(4 * raft.config.election_ticks):
            self.tick(node_id)
            self.deliver_all(ballot)
            if raft.role is Role.LEADER:
                break
        return raft

    def settle(self, leader: NodeId, among: Iterable[NodeId] | None = None, rounds: int = 3) -> None:
        """Deliver what flows between ``among`` (everyone by default), with heartbeat rounds of ``leader`` in
        between, so followers learn commits and catch up; messages to or from anyone else are dropped."""
        group = set(among) if among is not None else set(self.ids)

        def inside(m: AnyMessage) -> bool:
            return m.src in group and m.dst in group

        for _ in range(rounds):
            self.deliver_all(inside)
            self.tick(leader, self.raft(leader).config.heartbeat_ticks)
        self.deliver_all(inside)
        self.take()

    def lease_over(self, node_id: NodeId) -> None:
        """Let ``node_id`` time out (its own ballots dropped), so it no longer ignores candidates for the sake
        of a leader it heard from recently (the check-quorum lease)."""
        self.tick(node_id, self.raft(node_id).config.election_ticks)  # the lease lasts one election timeout
        self.take(lambda m: m.src == node_id)
