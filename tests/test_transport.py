"""The peer transport against a real HTTP server in the same Trio run: order, batching, failure reporting.

Regression for a chaos finding: with one POST per message, a link with 100 ms of delay capped a peer at ten
messages a second, below the heartbeat rate, and the cluster stalled; messages that queue up now share a POST.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import hypercorn.config
import hypercorn.trio
import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from raftkv.raft.types import AnyMessage, TimeoutNow
from raftkv.transport import QUEUE_LIMIT, Transport
from raftkv.wire import RAFT_BATCH_PATH, parse_raft_batch, parse_raft_message


class PeerStub:
    """A peer that records every message it gets and holds its first answer until ``release`` is set."""

    def __init__(self) -> None:
        self.posts: list[list[AnyMessage]] = []
        self.release = trio.Event()
        self.first_arrived = trio.Event()
        self.arrived = trio.Event()  # replaced after each POST
        self.app = QuartTrio(__name__)

        @self.app.post("/raft/<name>")
        async def receive(name: str) -> tuple[dict[str, object], int]:
            body = await request.get_data(as_text=False)
            batch = parse_raft_batch(body) if request.path == RAFT_BATCH_PATH else [parse_raft_message(body)]
            self.posts.append(batch)
            self.first_arrived.set()
            self.arrived.set()
            self.arrived = trio.Event()
            await self.release.wait()
            return {}, 202

    async def wait_for(self, count: int) -> None:
        while sum(map(len, self.posts)) < count:
            await self.arrived.wait()


@pytest.fixture
async def peer(nursery: trio.Nursery) -> AsyncIterator[tuple[PeerStub, str]]:
    stub = PeerStub()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    urls = await nursery.start(hypercorn.trio.serve, stub.app, config)
    yield stub, urls[0]


def message(term: int) -> TimeoutNow:
    return TimeoutNow(term=term, src="n1", dst="n2")


async def test_messages_queued_behind_a_slow_post_share_the_next_one(
    peer: tuple[PeerStub, str], nursery: trio.Nursery
) -> None:
    stub, url = peer
    transport = Transport(rpc_timeout=10)
    transport.set_routes({"n2": url})
    await nursery.start(transport.run)
    transport.send(message(1))
    await stub.first_arrived.wait()  # the first POST is now held by the peer
    for term in range(2, 12):
        transport.send(message(term))
    stub.release.set()
    with trio.fail_after(5):
        await stub.wait_for(11)
    assert [m.term for batch in stub.posts for m in batch] == list(range(1, 12))  # in order, none lost
    assert len(stub.posts) == 2  # the ten queued messages travelled together


async def test_failures_and_overflow_are_reported_to_the_core(nursery: trio.Nursery) -> None:
    reports, unreachable = trio.open_memory_channel[str](10)
    transport = Transport(rpc_timeout=1)
    transport.set_routes({"n2": "http://127.0.0.1:9"})  # nothing listens on the discard port
    transport.on_unreachable = reports.send_nowait
    for term in range(QUEUE_LIMIT + 1):  # the sender is not running yet: the last one overflows the queue
        transport.send(message(term))
    assert unreachable.receive_nowait() == "n2"
    await nursery.start(transport.run)
    with trio.fail_after(5):
        assert await unreachable.receive() == "n2"  # the refused connection is reported too
