"""What every handler is given: the node, the leader router, and the opening every client call shares.

A handler reads its query with ``query``, then ``read`` or ``write`` runs the call where it must run (locally
for a stale read, on the leader otherwise); whatever cannot be served here leaves as an ``Answer``, so a
handler only ever deals with the outcome it asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeVar

import trio
from pydantic import BaseModel
from quart import g, request

from raftkv import kv
from raftkv.api.errors import Answer, error_response
from raftkv.api.models import ReadQuery
from raftkv.api.router import LeaderRouter, unavailable
from raftkv.lease_keeper import LeaseKeeper
from raftkv.node import NotLeader, RaftNode, Unavailable

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY: Final = 256

Q = TypeVar("Q", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Api:
    node: RaftNode[kv.KVStore]
    router: LeaderRouter
    max_value_bytes: int
    leases: LeaseKeeper
    streams: set[trio.CancelScope] = field(default_factory=set)  # open long requests (see ``until_closing``)
    closing: trio.Event = field(default_factory=trio.Event)

    def close_streams(self) -> None:
        """Shutdown begins: end every long request (the server waits for every request in flight)."""
        self.closing.set()
        for scope in self.streams:
            scope.cancel()

    @contextlib.contextmanager
    def until_closing(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that ``close_streams`` cancels: for the waits of peer streams and watches."""
        with trio.CancelScope() as scope:
            if self.closing.is_set():
                scope.cancel()
            self.streams.add(scope)
            try:
                yield scope
            finally:
                self.streams.discard(scope)

    @property
    def store(self) -> kv.KVStore:
        return self.node.machine

    def query(self, model: type[Q]) -> Q:
        """The request's query string, validated (a 400 names what is wrong)."""
        return model.model_validate(request.args.to_dict())

    async def read(self, query: ReadQuery, read: Callable[[kv.KVStore], T]) -> T:
        """``read`` the local store, at the consistency asked for:

        - ``stale``: at once, on whichever node answers;
        - ``linearizable``: after a read barrier -- on the leader, or on a follower that asks the leader for a
          read index and waits to have applied it (so read load spreads over the members); with
          ``?redirect=true`` a follower redirects to the leader instead;
        - ``lease``: on the leader, from its lease (a follower forwards or redirects it there).
        """
        if query.consistency == "stale":
            return read(self.store)

        async def barrier_then_read() -> T:
            await self.node.read_barrier(lease=query.consistency == "lease")
            return read(self.store)

        if query.consistency == "linearizable" and not query.redirect and not self.node.is_leader:
            try:
                return await barrier_then_read()
            except NotLeader:
                raise unavailable("no leader is known at the moment") from None
            except Unavailable as e:
                raise unavailable(str(e)) from None
        return await self.router.on_leader(query.redirect, barrier_then_read)

    async def replicate(self, redirect: bool, data: bytes) -> object:
        """Replicate an encoded command: on the leader, or forwarded by this follower over the peer channel
        (the answer then names the leader, as a relayed one does); ``redirect`` sends the client there."""
        if redirect:

            async def on_the_leader() -> object:
                if not self.node.is_leader:
                    raise NotLeader(self.node.core.leader_id)
                return await self.node.write(data)

            return await self.router.on_leader(True, on_the_leader)
        leader = self.node.leader
        try:
            result = await self.node.write(data, g.get("trace"))
        except NotLeader:
            raise unavailable("no leader is known at the moment") from None
        except Unavailable as e:
            raise unavailable(str(e)) from None
        if leader is not None and leader[0] != self.node.config.id:
            g.relayed_from = leader
        return result

    async def apply(self, redirect: bool, command: kv.Command) -> kv.Outcome:
        """Replicate ``command`` and return its outcome. What no handler renders itself leaves as an Answer: a
        command that cannot be encoded (400) or holds a value over the limit (413), a lease that does not
        exist (404), an idempotency key used for another request (422). A replay returns the first outcome
        and marks the answer ``Idempotent-Replayed: true``."""
        value = command.value if isinstance(command, kv.Put) else None
        if value is not None and (size := kv.value_size(value)) > self.max_value_bytes:
            message = f"the value is {size} bytes of JSON, at most {self.max_value_bytes} allowed"
            raise Answer(error_response(413, message))
        try:
            data = kv.encode_command(command)
        except kv.CommandEncodeError as e:
            raise Answer(error_response(400, str(e))) from None
        result = await self.replicate(redirect, data)
        if isinstance(result, kv.Replayed):
            g.replayed = True
            result = result.result
        match result:
            case kv.InvalidCommand(reason=reason):
                raise Answer(error_response(400, f"invalid command: {reason}"))
            case kv.IdempotencyConflict(idempotency_key=key):
                raise Answer(error_response(422, f"the Idempotency-Key {key!r} was used for another request"))
            case kv.LeaseNotFound(lease=lease):
                raise Answer(error_response(404, f"lease {lease} not found"))
        assert isinstance(result, kv.Outcome), result
        return result


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` (400 beyond the spec's limits)."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise Answer(
            error_response(400, f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
        )
    return key
