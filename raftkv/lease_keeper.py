"""The leader's clock for leases: when each lease runs out, and the revoke it proposes then.

The store knows which leases exist and their ttls, but no time (its state must be the same on every replica),
so only the leader keeps deadlines, on its own monotonic clock: a lease it has not been told to keep alive for
``ttl`` seconds gets a ``LeaseRevoke`` proposed, which every replica then applies at the same point of the
log. A keep-alive reaches the leader (a follower forwards it) and starts the countdown again.

A node that becomes leader starts every lease's countdown afresh from its full ttl, whatever the old leader had
counted: so a failover can only make a lease last longer, never end early -- a client that kept a lease alive
up to the failover still has a full ttl to reach the new leader. A lease granted while this node leads starts
when the node applies the grant, which is after the client asked for it.

A keep-alive that comes once the countdown has run out is refused (404), and so is every keep-alive after
the revoke was proposed, even if that proposal's outcome is not known yet: a lease whose keep-alive was
answered always lives a full ttl after it.
"""

from __future__ import annotations

import heapq
import logging

import trio

from raftkv import kv
from raftkv.node import NotLeader, RaftNode, Unavailable

log = logging.getLogger(__name__)

RETRY_REVOKE = 1.0  # seconds before proposing again a revoke that did not commit (the leader may be cut off)


class LeaseNotFound(KeyError):
    """No such lease (never granted, or revoked already)."""


class LeaseKeeper:
    def __init__(self, node: RaftNode[kv.KVStore]) -> None:
        self.node = node
        self.deadlines: dict[int, float] = {}  # lease -> when it runs out (trio clock), while this node leads
        self._queue: list[tuple[float, int]] = []  # (deadline, lease), with stale entries skipped when popped
        self._revoking: set[int] = set()  # revokes being proposed now
        self._ended: set[int] = set()  # leases this leader proposed to revoke: never kept alive again
        self._led_term: int | None = None  # the term whose leases are counted here (None: not leading)
        self._seen: tuple[kv.KVStore, int] | None = None  # the store and lease version deadlines follow

    def keep_alive(self, lease: int) -> int:
        """Start ``lease``'s countdown again; returns its ttl. Raises NotLeader, or LeaseNotFound."""
        self._sync()
        if self._led_term is None:
            raise NotLeader(self.node.core.leader_id)
        held = self.node.machine.lease(lease)
        deadline = self.deadlines.get(lease)
        now = trio.current_time()
        if held is None or lease in self._ended or (deadline is not None and deadline <= now):
            raise LeaseNotFound(lease)
        self._set(lease, now + held[0])
        return held[0]

    def remaining(self, lease: int) -> float:
        """Seconds until this leader revokes ``lease``. Raises NotLeader, or LeaseNotFound."""
        self._sync()
        if self._led_term is None:
            raise NotLeader(self.node.core.leader_id)
        deadline = self.deadlines.get(lease)
        if deadline is None:
            raise LeaseNotFound(lease)
        return max(0.0, deadline - trio.current_time())

    async def run(self) -> None:
        """Revoke each lease when it runs out, for as long as this node leads; until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                self._sync()
                now = trio.current_time()
                while self._queue and self._queue[0][0] <= now:
                    deadline, lease = heapq.heappop(self._queue)
                    if self.deadlines.get(lease) == deadline and lease not in self._revoking:
                        self._revoking.add(lease)
                        self._ended.add(lease)
                        nursery.start_soon(self._revoke, lease)
                with trio.move_on_at(self._queue[0][0] if self._queue else float("inf")):
                    await self.node.changed()

    async def _revoke(self, lease: int) -> None:
        command = kv.encode_command(kv.LeaseRevoke(lease=lease))
        try:
            await self.node.write(command)
            log.info("lease %d ran out: revoked", lease)
        except (NotLeader, Unavailable) as e:
            log.info("the revoke of lease %d did not commit (%s); trying again if still leading", lease, e)
            if lease in self.deadlines:
                self._set(lease, trio.current_time() + RETRY_REVOKE)
        finally:
            self._revoking.discard(lease)

    def _set(self, lease: int, deadline: float) -> None:
        self.deadlines[lease] = deadline
        heapq.heappush(self._queue, (deadline, lease))

    def _sync(self) -> None:
        """Follow leadership and the store's leases: a new term of ours counts every lease from now, a lease
        granted since counts from now, a revoked one is forgotten; no leadership, no deadlines."""
        node, store = self.node, self.node.machine
        if not node.is_leader:
            if self._led_term is not None:
                self.deadlines.clear()
                self._queue.clear()
                self._ended.clear()
                self._led_term = self._seen = None
            return
        if self._led_term == node.core.term and self._seen == (store, store.lease_version):
            return
        now = trio.current_time()
        ttls = dict(store.leases())
        if self._led_term != node.core.term:
            self.deadlines.clear()
            self._queue.clear()
            self._ended.clear()
            self._led_term = node.core.term
        for lease in self.deadlines.keys() - ttls.keys():
            del self.deadlines[lease]
        self._ended &= ttls.keys()
        for lease, ttl in ttls.items():
            if lease not in self.deadlines:
                self._set(lease, now + ttl)
        self._seen = (store, store.lease_version)
