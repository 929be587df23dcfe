"""Client writes a follower hands to its leader over the peer channel, in batches.

A follower that takes a write does not relay the HTTP request: it sends the encoded command to the leader in a
``Forward`` message, together with every other write that arrived while the previous batch was on its way,
and the leader appends them all and answers where the first one landed (``ForwardReply``; the others follow
it, in order, in the term of the reply). The follower then waits, as the leader would, for its own state
machine to apply each entry, and answers its client with the outcome it computed itself: the state machine is
deterministic, so that is the leader's outcome too. A write taken by a follower thus costs the leader a share
of one message, not an HTTP request of its own.

Nothing here touches Raft's safety: the leader appends forwarded commands exactly as its own clients' ones.
A lost message only costs the writes of its batch a timeout (their outcome unknown, as for any write that
times out), and a reply to a batch of an earlier incarnation of the follower is not taken for a new one
(``seq`` starts anew from a random base at each start).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.raft.types import AnyMessage, Message, NodeId

MAX_FORWARDED = 256  # commands in one Forward; more wait for the next one
MAX_FORWARDED_BYTES = 8 << 20  # and about this many bytes of them


@dataclass(frozen=True, slots=True)
class Forward(Message):
    """Commands for the leader to append, in order (``term`` is the sender's)."""

    seq: int
    commands: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ForwardReply(Message):
    """Where the commands of Forward ``seq`` landed: the first at ``index`` and the rest after it, all in
    ``term``; ``index`` None when the receiver did not append them (it is not the leader, or it is handing
    leadership over)."""

    seq: int
    index: int | None


PeerMessage = AnyMessage | Forward | ForwardReply
"""What travels between nodes: Raft's messages, and the writes followers forward to their leader."""

Leader = Callable[[], tuple[NodeId, int] | None]
"""The leader the follower knows of now, and its own term."""
Placed = Callable[[object, int, int], None]
"""Told, for each forwarded write, the (index, term) of its entry."""
Refused = Callable[[object, str], None]
"""Told, for each forwarded write that has no entry, why."""


@dataclass(slots=True)
class _Batch:
    seq: int
    leader: NodeId
    writes: list[object]


class Forwarder:
    """The follower's side: one batch on its way to the leader at a time, the next one growing meanwhile."""

    def __init__(
        self,
        node_id: NodeId,
        rng: random.Random,
        leader: Leader,
        send: Callable[[Forward], None],
        placed: Placed,
        refused: Refused,
    ) -> None:
        self.node_id = node_id
        self.leader, self.send, self.placed, self.refused = leader, send, placed, refused
        self.seq = rng.getrandbits(48) << 16
        self.waiting: list[tuple[bytes, object]] = []
        self.in_flight: _Batch | None = None

    def submit(self, command: bytes, write: object) -> None:
        """Forward ``command`` to the leader; ``write`` is what ``placed`` or ``refused`` is told about."""
        self.waiting.append((command, write))
        if self.in_flight is None:
            self._send_next()

    def answer(self, reply: ForwardReply) -> None:
        """The leader's answer to the batch in flight (a late answer to an abandoned one is ignored); the next
        batch goes out then."""
        batch = self.in_flight
        if batch is None or reply.seq != batch.seq:
            return
        self.in_flight = None
        for offset, write in enumerate(batch.writes):
            if reply.index is None:
                self.refused(write, f"{reply.src} did not take the write (it is not leading); retry")
            else:
                self.placed(write, reply.index + offset, reply.term)
        self._send_next()

    def abandon(self, write: object) -> None:
        """``write`` gave up waiting: forget it, and if its batch is the one in flight, give up on that batch
        (its answer is lost, or the leader is gone) so that the next one can go."""
        self.waiting = [(command, w) for command, w in self.waiting if w is not write]
        batch = self.in_flight
        if batch is not None and any(w is write for w in batch.writes):
            self.in_flight = None
            for other in batch.writes:
                if other is not write:
                    self.refused(other, "the leader did not answer in time; the outcome is unknown")
        if self.in_flight is None:
            self._send_next()

    def leader_changed(self) -> None:
        """Another leader, or none, is known now: the batch in flight to the old one may never be answered (it
        may be dead), so its writes are refused at once, their outcome unknown, rather than left to time out
        while a new leader already serves; what waits goes to the new leader."""
        batch = self.in_flight
        known = self.leader()
        if batch is None or (known is not None and known[0] == batch.leader):
            return
        self.in_flight = None
        for write in batch.writes:
            self.refused(write, f"leadership moved away from {batch.leader}; the outcome is unknown, retry")
        self._send_next()

    def _send_next(self) -> None:
        """Send what is waiting, up to a batch, to the leader known now (or refuse it all if none is)."""
        if not self.waiting:
            return
        known = self.leader()
        if known is None:
            for _, write in self.waiting:
                self.refused(write, "no other node is known to lead at the moment; retry")
            self.waiting = []
            return
        leader, term = known
        count, size = 0, 0
        while count < min(len(self.waiting), MAX_FORWARDED) and (count == 0 or size < MAX_FORWARDED_BYTES):
            size += len(self.waiting[count][0])
            count += 1
        taken, self.waiting = self.waiting[:count], self.waiting[count:]
        self.seq += 1
        self.in_flight = _Batch(self.seq, leader, [write for _, write in taken])
        self.send(
            Forward(
                term=term,
                src=self.node_id,
                dst=leader,
                seq=self.seq,
                commands=tuple(command for command, _ in taken),
            )
        )
