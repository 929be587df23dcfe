"""A controllable userspace TCP proxy per directed link, and a mesh of them for a whole cluster.

The kernel here has no netem and the harness has no root, so network faults come from the path itself, the
way etcd's robustness tests do it: node A reaches node B only through the proxy of link A->B, and that proxy
can cut, black-hole, delay or reset what crosses it. A TCP stream never loses or corrupts bytes, so every
fault is one a real client could see: an error, a timeout, or late data, never wrong data.
"""

from __future__ import annotations

import enum
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial

import trio

CHUNK_BYTES = 65536
QUEUED_CHUNKS = 64  # back-pressure per direction while chunks wait out their delay

Link = tuple[str, str]


class BlockMode(enum.Enum):
    """How a blocked link treats connections opened while it is blocked."""

    DROP = "drop"  # accepted and black-holed: the client times out, like packets lost in a partition
    REJECT = "reject"  # reset at once: the client gets an error, like a firewall REJECT rule


@dataclass
class LinkStats:
    """Counters of one link, for reports and for tests that check a fault really bit."""

    connections_accepted: int = 0
    connections_cut: int = 0
    bytes_to_dst: int = 0
    bytes_to_src: int = 0
    bytes_dropped: int = 0


class _ConnectionLost(Exception):
    """Raised inside a pipe when simulated loss decides this connection dies."""


@dataclass(eq=False)
class _Connection:
    """One proxied client connection; the proxy cuts it by cancelling its scope."""

    client: trio.SocketStream
    upstream: trio.SocketStream | None = None
    black_holed: bool = False
    abort: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def cut(self) -> None:
        self.abort = True
        self.scope.cancel()

    def close(self) -> None:
        """Close both sockets; an aborted connection is reset so each end notices at once."""
        for stream in (self.client, self.upstream):
            if stream is None:
                continue
            if self.abort:
                with suppress(OSError):
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.socket.close()


class LinkProxy:
    """Forwards connections from one node to another's listening port, with faults switched on demand.

    Controls are plain synchronous methods so a harness task in the same ``trio.run`` can flip them at any
    moment; they take effect on the next chunk (delay, loss) or at once (block).
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        name: str = "",
        rng: random.Random | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.target = target
        self.name = name
        self.host = host
        self.stats = LinkStats()
        self._port: int | None = None
        self._rng = rng if rng is not None else random.Random(name)
        self._blocked: BlockMode | None = None
        self._delay = 0.0
        self._jitter = 0.0
        self._loss = 0.0
        self._connections: set[_Connection] = set()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"proxy {self.name} is not serving yet")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def blocked(self) -> bool:
        return self._blocked is not None

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def block(self, mode: BlockMode = BlockMode.DROP) -> None:
        """Cut every open connection (reset) and treat new ones according to ``mode`` until unblocked."""
        self._blocked = mode
        self._cut_where(lambda connection: True)

    def unblock(self) -> None:
        """Let new connections through; black-holed ones are reset so their clients retry promptly."""
        self._blocked = None
        self._cut_where(lambda connection: connection.black_holed)

    def set_delay(self, seconds: float, jitter: float = 0.0) -> None:
        """Hold every chunk ``seconds`` +/- ``jitter`` (uniform) in each direction; order is kept."""
        if seconds < 0 or jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._delay, self._jitter = seconds, jitter

    def set_loss(self, probability: float, rng: random.Random | None = None) -> None:
        """Reset the connection with ``probability`` per chunk: TCP's only way to lose data is to die."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("loss probability must be within [0, 1]")
        self._loss = probability
        if rng is not None:
            self._rng = rng

    def clear_faults(self) -> None:
        """Back to a perfect link: unblocked, no delay, no loss."""
        self.unblock()
        self.set_delay(0.0)
        self.set_loss(0.0)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port of ``host`` (reported through ``task_status``) and proxy until cancelled."""
        async with trio.open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(
                partial(trio.serve_tcp, self._handle, 0, host=self.host)
            )
            self._port = listeners[0].socket.getsockname()[1]
            task_status.started(self._port)

    def _cut_where(self, predicate: Callable[[_Connection], bool]) -> None:
        for connection in list(self._connections):
            if predicate(connection):
                self.stats.connections_cut += 1
                connection.cut()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.stats.connections_accepted += 1
        connection = _Connection(client)
        self._connections.add(connection)
        try:
            with connection.scope:
                await self._proxy(connection)
        except* (OSError, trio.BrokenResourceError, _ConnectionLost):
            self.stats.connections_cut += 1
            connection.abort = True
        finally:
            self._connections.discard(connection)
            connection.close()

    async def _proxy(self, connection: _Connection) -> None:
        if self._blocked is BlockMode.REJECT:
            self.stats.connections_cut += 1
            connection.abort = True
            return
        if self._blocked is BlockMode.DROP:
            connection.black_holed = True
            await self._black_hole(connection.client)
            return
        connection.upstream = await trio.open_tcp_stream(*self.target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, connection.client, connection.upstream, True)
            nursery.start_soon(self._pipe, connection.upstream, connection.client, False)

    async def _black_hole(self, client: trio.SocketStream) -> None:
        while chunk := await client.receive_some(CHUNK_BYTES):
            self.stats.bytes_dropped += len(chunk)
        await trio.sleep_forever()

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream, to_dst: bool) -> None:
        """Read chunks, stamp each with its due time, and let a deliverer send them when due."""
        send_channel, receive_channel = trio.open_memory_channel[tuple[float, bytes]](QUEUED_CHUNKS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive_channel, sink, to_dst)
            async with send_channel:
                last_due = 0.0
                while chunk := await source.receive_some(CHUNK_BYTES):
                    if self._loss and self._rng.random() < self._loss:
                        raise _ConnectionLost(self.name)
                    last_due = max(last_due, trio.current_time() + self._sample_delay())
                    await send_channel.send((last_due, chunk))

    async def _deliver(
        self, chunks: trio.MemoryReceiveChannel[tuple[float, bytes]], sink: trio.SocketStream, to_dst: bool
    ) -> None:
        async with chunks:
            async for due, chunk in chunks:
                await trio.sleep_until(due)
                await sink.send_all(chunk)
                if to_dst:
                    self.stats.bytes_to_dst += len(chunk)
                else:
                    self.stats.bytes_to_src += len(chunk)
        await sink.send_eof()

    def _sample_delay(self) -> float:
        if not self._jitter:
            return self._delay
        return max(0.0, self._delay + self._rng.uniform(-self._jitter, self._jitter))


class ProxyMesh:
    """One LinkProxy per ordered pair of nodes, so any node-to-node path can be faulted on its own."""

    def __init__(
        self, targets: Mapping[str, tuple[str, int]], *, seed: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.nodes = tuple(sorted(targets))
        self.links: dict[Link, LinkProxy] = {
            (src, dst): LinkProxy(
                targets[dst], name=f"{src}->{dst}", rng=random.Random(f"{seed}:{src}->{dst}"), host=host
            )
            for src in self.nodes
            for dst in self.nodes
            if src != dst
        }

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every link's proxy, report readiness, and run until cancelled."""
        async with trio.open_nursery() as nursery:
            for link in self.links.values():
                await nursery.start(link.serve)
            task_status.started()

    def link(self, src: str, dst: str) -> LinkProxy:
        return self.links[(src, dst)]

    def peer_url(self, src: str, dst: str) -> str:
        """The URL ``src`` must be given for peer ``dst`` so its traffic crosses the link's proxy."""
        return self.link(src, dst).url

    def peer_urls(self, src: str) -> dict[str, str]:
        """How ``src`` reaches each other node: through the proxy of that directed link."""
        return {dst: self.peer_url(src, dst) for dst in self.nodes if dst != src}

    def links_touching(self, node: str) -> list[Link]:
        return [link for link in self.links if node in link]

    def partition(self, groups: Iterable[set[str]], mode: BlockMode = BlockMode.DROP) -> None:
        """Only nodes of the same group reach each other; a node named in no group is alone."""
        group_of = {node: index for index, group in enumerate(groups) for node in group}
        for (src, dst), link in self.links.items():
            if src in group_of and group_of.get(src) == group_of.get(dst):
                link.unblock()
            else:
                link.block(mode)

    def isolate(self, node: str, mode: BlockMode = BlockMode.DROP) -> None:
        self.partition([{node}, set(self.nodes) - {node}], mode)

    def cut_one_way(self, src: str, dst: str, mode: BlockMode = BlockMode.DROP) -> None:
        """Block only ``src`` -> ``dst``: ``dst`` still reaches ``src``."""
        self.link(src, dst).block(mode)

    def set_delay(self, seconds: float, jitter: float = 0.0, links: Iterable[Link] | None = None) -> None:
        for link in self._select(links):
            link.set_delay(seconds, jitter)

    def set_loss(self, probability: float, links: Iterable[Link] | None = None) -> None:
        for link in self._select(links):
            link.set_loss(probability)

    def heal(self) -> None:
        """Every link back to perfect: unblocked, no delay, no loss."""
        for link in self.links.values():
            link.clear_faults()

    def stats(self) -> dict[str, LinkStats]:
        return {link.name: link.stats for link in self.links.values()}

    def _select(self, links: Iterable[Link] | None) -> list[LinkProxy]:
        return list(self.links.values()) if links is None else [self.links[link] for link in links]


@asynccontextmanager
async def open_proxy_mesh(
    targets: Mapping[str, tuple[str, int]], *, seed: int = 0
) -> AsyncIterator[ProxyMesh]:
    """Serve a ProxyMesh for the duration of the block; every proxy and connection closes on exit."""
    mesh = ProxyMesh(targets, seed=seed)
    async with trio.open_nursery() as nursery:
        await nursery.start(mesh.serve)
        try:
            yield mesh
        finally:
            nursery.cancel_scope.cancel()
