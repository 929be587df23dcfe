"""The fault-injecting proxy against real loopback sockets: forwarding, block, delay, loss, and the mesh."""

from __future__ import annotations

from contextlib import suppress
from functools import partial

import httpx
import trio
import trio.testing

from raftkv_harness.proxy import BlockMode, LinkProxy, ProxyMesh

HOST = "127.0.0.1"


class EchoServer:
    """Echoes raw bytes, or answers HTTP requests with their own body; counts the connections it saw."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def start(self, nursery: trio.Nursery, *, http: bool = False) -> EchoServer:
        handler = self._http if http else self._echo
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _echo(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        with suppress(trio.BrokenResourceError):
            while data := await stream.receive_some():
                await stream.send_all(data)

    async def _http(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        with suppress(trio.BrokenResourceError):
            while chunk := await stream.receive_some():
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    head, rest = buffer.split(b"\r\n\r\n", 1)
                    length = _content_length(head)
                    if len(rest) < length:
                        break
                    body, buffer = rest[:length], rest[length:]
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def start_link(nursery: trio.Nursery, server: EchoServer) -> LinkProxy:
    link = LinkProxy((HOST, server.port), name="a->b")
    await nursery.start(link.serve)
    return link


async def connection_is_dead(stream: trio.SocketStream) -> bool:
    """True when the peer reset or closed the connection instead of sending data."""
    try:
        return await stream.receive_some() == b""
    except trio.BrokenResourceError:
        return True


async def echoes_through(port: int) -> bool:
    """True when a fresh connection to ``port`` carries a byte there and back."""
    async with await trio.open_tcp_stream(HOST, port) as stream:
        try:
            await stream.send_all(b"?")
            return await stream.receive_some() == b"?"
        except trio.BrokenResourceError:
            return False


async def round_trip(port: int, payload: bytes) -> bytes:
    async with await trio.open_tcp_stream(HOST, port) as stream:
        await stream.send_all(payload)
        received = b""
        while len(received) < len(payload):
            received += await stream.receive_some()
        return received


async def test_forwards_http_exchanges_over_one_keep_alive_connection(nursery: trio.Nursery) -> None:
    server = await EchoServer().start(nursery, http=True)
    link = await start_link(nursery, server)
    async with httpx.AsyncClient(base_url=link.url, trust_env=False) as client:
        first = await client.post("/raft/append-entries", content=b'{"term": 1}')
        second = await client.post("/raft/append-entries", content=b'{"term": 2}')
    assert (first.status_code, first.content) == (200, b'{"term": 1}')
    assert second.content == b'{"term": 2}'
    assert link.stats.connections_accepted == server.connections == 1
    assert link.stats.bytes_to_dst > 2 * len(b'{"term": 1}')
    assert link.stats.bytes_to_src > 2 * len(b'{"term": 1}')


async def test_rejecting_block_fails_clients_fast_and_unblock_restores(nursery: trio.Nursery) -> None:
    server = await EchoServer().start(nursery, http=True)
    link = await start_link(nursery, server)
    async with httpx.AsyncClient(base_url=link.url, trust_env=False, timeout=30) as client:
        assert (await client.post("/", content=b"before")).content == b"before"
        link.block(BlockMode.REJECT)
        with trio.fail_after(
            5
        ):  # far below the client's own 30 s timeout: the failure is an error, not a wait
            try:
                await client.post("/", content=b"during")
            except httpx.TransportError:
                pass
            else:
                raise AssertionError("a request crossed a blocked link")
        link.unblock()
        assert (await client.post("/", content=b"after")).content == b"after"
    assert server.connections == 2


async def test_block_resets_open_connections(nursery: trio.Nursery) -> None:
    server = await EchoServer().start(nursery)
    link = await start_link(nursery, server)
    async with await trio.open_tcp_stream(HOST, link.port) as stream:
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
        link.block()
        assert await connection_is_dead(stream)
    assert link.stats.connections_cut == 1


async def test_dropping_block_black_holes_new_connections_until_unblocked(nursery: trio.Nursery) -> None:
    server = await EchoServer().start(nursery)
    link = await start_link(nursery, server)
    link.block(BlockMode.DROP)
    async with await trio.open_tcp_stream(HOST, link.port) as stream:
        await stream.send_all(b"ping")
        with trio.move_on_after(0.3) as waited:
            await stream.receive_some()
        assert waited.cancelled_caught, "a black-holed connection answered"
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        link.unblock()
        assert await connection_is_dead(stream)
    assert server.connections == 0
    assert link.stats.bytes_dropped == len(b"ping")
    assert await round_trip(link.port, b"again") == b"again"


async def test_delay_holds_each_direction_and_keeps_order(nursery: trio.Nursery) -> None:
    server = await EchoServer().start(nursery)
    link = await start_link(nursery, server)
    link.set_delay(0.1)
    started = trio.current_time()
    assert await round_trip(link.port, b"x") == b"x"
    assert trio.current_time() - started >= 0.2  # once per direction; sleeps never end early

    link.set_delay(0.01, jitter=0.01)
    async with await trio.open_tcp_stream(HOST, link.port) as stream:
        expected = b"".join(b"%04d," % i for i in range(200))
        for i in range(200):
            await stream.send_all(b"%04d," % i)
        received = b""
        while len(received) < len(expected):
            received += await stream.receive_some()
    assert received == expected


async def test_loss_resets_the_connection_instead_of_losing_bytes(nursery: trio.Nursery) -> None:
    server = await EchoServer().start(nursery)
    link = await start_link(nursery, server)
    link.set_loss(1.0)
    async with await trio.open_tcp_stream(HOST, link.port) as stream:
        await stream.send_all(b"ping")
        assert await connection_is_dead(stream)
    link.set_loss(0.0)
    assert await round_trip(link.port, b"pong") == b"pong"
    assert link.stats.connections_cut == 1


async def test_mesh_cuts_and_partitions_only_the_named_directions(nursery: trio.Nursery) -> None:
    servers = {node: await EchoServer().start(nursery) for node in ("n1", "n2", "n3")}
    mesh = ProxyMesh({node: (HOST, server.port) for node, server in servers.items()}, seed=7)
    await nursery.start(mesh.serve)
    assert mesh.peer_urls("n1") == {"n2": mesh.peer_url("n1", "n2"), "n3": mesh.peer_url("n1", "n3")}

    async def reachable() -> set[tuple[str, str]]:
        """The directed links a fresh connection gets through right now."""
        return {link for link, proxy in mesh.links.items() if await echoes_through(proxy.port)}

    everything = set(mesh.links)
    mesh.cut_one_way("n1", "n2", BlockMode.REJECT)
    assert await reachable() == everything - {("n1", "n2")}
    mesh.partition([{"n1"}, {"n2", "n3"}], BlockMode.REJECT)
    assert await reachable() == {("n2", "n3"), ("n3", "n2")}
    mesh.heal()
    assert await reachable() == everything
