"""The peer transport against a real HTTP server in the same Trio run: order, streaming, failure reporting.

Regression for a chaos finding: with one POST per message, a link with 100 ms of delay capped a peer at ten
messages a second, below the heartbeat rate, and the cluster stalled; messages now stream on one request, and
what queues up while a chunk is written shares the next chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import hypercorn.config
import hypercorn.trio
import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from raftkv.forwarding import PeerMessage
from raftkv.raft.types import TimeoutNow
from raftkv.transport import QUEUE_LIMIT, Transport
from raftkv.wire import RAFT_STREAM_PATH, FrameReader, parse_raft_message


class PeerStub:
    """A peer that records every message of every stream it is sent, and can end the open stream."""

    def __init__(self) -> None:
        self.streams: list[list[PeerMessage]] = []
        self.arrived = trio.Event()  # replaced after each message
        self.end_stream = trio.Event()
        self.app = QuartTrio(__name__)

        @self.app.post(RAFT_STREAM_PATH)
        async def receive() -> tuple[dict[str, object], int]:
            received: list[PeerMessage] = []
            self.streams.append(received)
            reader = FrameReader()
            with trio.move_on_after(60) as scope:
                async with trio.open_nursery() as nursery:

                    async def end_on_request() -> None:
                        await self.end_stream.wait()
                        self.end_stream = trio.Event()
                        scope.cancel()

                    nursery.start_soon(end_on_request)
                    async for chunk in request.body:
                        for line in reader.feed(chunk):
                            received.append(parse_raft_message(line))
                            self.arrived.set()
                            self.arrived = trio.Event()
            return {}, 202

    def messages(self) -> list[PeerMessage]:
        return [m for stream in self.streams for m in stream]

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(5):
            while len(self.messages()) < count:
                await self.arrived.wait()


@pytest.fixture
async def peer(nursery: trio.Nursery) -> AsyncIterator[tuple[PeerStub, str]]:
    stub = PeerStub()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0
    urls = await nursery.start(hypercorn.trio.serve, stub.app, config)
    yield stub, urls[0]


def message(term: int) -> TimeoutNow:
    return TimeoutNow(term=term, src="n1", dst="n2")


async def test_messages_stream_in_order_on_one_request(
    peer: tuple[PeerStub, str], nursery: trio.Nursery
) -> None:
    stub, url = peer
    transport = Transport(rpc_timeout=10)
    transport.set_routes({"n2": url})
    for term in range(1, 11):  # queued before the sender runs: they share the first chunk
        transport.send(message(term))
    await nursery.start(transport.run)
    await stub.wait_for(10)
    for term in range(11, 21):
        transport.send(message(term))
        await stub.wait_for(term)
    assert [m.term for m in stub.messages()] == list(range(1, 21))  # in order, none lost
    assert len(stub.streams) == 1  # all on one request


async def test_a_stream_the_peer_ends_is_reported_and_reopened(
    peer: tuple[PeerStub, str], nursery: trio.Nursery
) -> None:
    stub, url = peer
    reports, unreachable = trio.open_memory_channel[str](10)
    transport = Transport(rpc_timeout=10)
    transport.on_unreachable = reports.send_nowait
    transport.set_routes({"n2": url})
    await nursery.start(transport.run)
    transport.send(message(1))
    await stub.wait_for(1)
    stub.end_stream.set()
    with trio.fail_after(5):
        assert await unreachable.receive() == "n2"  # the core hears of it, and stops pipelining
    with trio.fail_after(5):
        while len(stub.messages()) < 2:  # messages queued while the stream was down may be dropped
            transport.send(message(2))
            await trio.sleep(0.05)
    assert len(stub.streams) == 2 and stub.streams[1][0].term == 2


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
