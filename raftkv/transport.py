"""Raft messages to peers: one-way HTTP POSTs, one sender task and one keep-alive connection per peer.

Raft tolerates lost, duplicated and reordered messages, so the transport keeps no promises beyond "probably,
in order": each peer has a bounded queue; when it is full the newest message is dropped, and when a POST
fails the queue is flushed (the core resends what still matters on the next heartbeat) and the core is told,
so it stops pipelining to that peer. A dead or paused peer therefore costs one timeout per backoff period and
never delays the other peers.

The HTTP client is a few lines of h11 on a Trio stream rather than httpx: a sender needs one connection and
only the status of each answer, and httpx's pool machinery cost more CPU per message than everything else on
the leader's send path (measured in the README's Performance section).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

import h11
import trio

from raftkv.raft.types import AnyMessage
from raftkv.wire import (
    MAX_BATCH_MESSAGES,
    RAFT_BATCH_PATH,
    dump_raft_batch,
    dump_raft_message,
    raft_path,
)

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
QUEUE_LIMIT = 512  # messages waiting per peer; more are dropped (the core resends what matters)
RECEIVE_BYTES = 65536  # one read of an answer: a status line and a few headers fit many times over
FIRST_BACKOFF = 0.05  # seconds after a first failure: one heartbeat interval (100 ms) of tries is kept
MAX_BACKOFF = 1.0  # doubling up to this: a peer that comes back is reached within a second


class PeerError(Exception):
    """A message could not be delivered: no connection, a timeout, a broken answer or an error status."""


class PeerConnection:
    """One keep-alive HTTP/1.1 connection to a peer, reopened on demand after any failure."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str], tls: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or parts.hostname is None:
            raise ValueError(f"peer URL must be http(s)://HOST[:PORT], got {url!r}")
        self.host, self.port = parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]
        self.tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = [("Host", parts.netloc), *headers.items()]
        self.stream: trio.abc.Stream | None = None
        self.http = h11.Connection(h11.CLIENT)

    async def post(self, path: str, body: bytes) -> int:
        """POST ``body`` and return the answer's status; raises PeerError (and drops the connection).
        Large bodies (snapshots) get a second more per MiB on top of the timeout."""
        try:
            with trio.fail_after(self.timeout + len(body) / (1 << 20)):
                return await self._exchange(path, body)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError) as e:
            await self.close()
            raise PeerError(f"{type(e).__name__}: {e}") from e

    async def _exchange(self, path: str, body: bytes) -> int:
        if self.stream is None:
            if self.tls is None:
                self.stream = await trio.open_tcp_stream(self.host, self.port)
            else:
                self.stream = await trio.open_ssl_over_tcp_stream(self.host, self.port, ssl_context=self.tls)
            self.http = h11.Connection(h11.CLIENT)
        headers = [*self.headers, ("Content-Length", str(len(body)))]
        request = h11.Request(method="POST", target=self.prefix + path, headers=headers)
        await self.stream.send_all(
            self.http.send(request) + self.http.send(h11.Data(data=body)) + self.http.send(h11.EndOfMessage())
        )
        status = 0
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(bytes(await self.stream.receive_some(RECEIVE_BYTES)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("the peer closed the connection")
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
        else:
            await self.close()  # the peer asked to close (e.g. it is shutting down)
        return status

    async def close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()


class Transport:
    def __init__(
        self,
        peers: dict[str, str],
        rpc_timeout: float,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.peers = peers
        self.rpc_timeout = rpc_timeout
        self.tls = tls
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.on_unreachable: Callable[[str], None] = lambda peer: None
        self._queues = {peer: trio.open_memory_channel[AnyMessage](QUEUE_LIMIT) for peer in peers}

    def send(self, message: AnyMessage) -> None:
        """Queue ``message`` for its destination without blocking. A full queue drops it and tells the core,
        which then stops assuming its pipelined messages arrive."""
        queue = self._queues.get(message.dst)
        if queue is None:
            return
        try:
            queue[0].send_nowait(message)
        except trio.WouldBlock:
            self.on_unreachable(message.dst)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for peer, url in self.peers.items():
                nursery.start_soon(self._sender, peer, url)
            task_status.started()

    async def _sender(self, peer: str, url: str) -> None:
        """Send what queued up for ``peer``: one message on its own endpoint, several in one batch, so a slow
        link costs a round trip per batch rather than per message."""
        receive = self._queues[peer][1]
        connection = PeerConnection(url, self.rpc_timeout, self.headers, self.tls)
        backoff = 0.0
        try:
            async for first in receive:
                batch = [first, *_take_queued(receive, MAX_BATCH_MESSAGES - 1)]
                try:
                    if len(batch) == 1:
                        status = await connection.post(raft_path(first), dump_raft_message(first))
                    else:
                        status = await connection.post(RAFT_BATCH_PATH, dump_raft_batch(batch))
                    if status >= 300:
                        raise PeerError(f"answered {status}")
                    backoff = 0.0
                except PeerError as e:
                    log.log(
                        logging.WARNING if backoff == 0 else logging.DEBUG,
                        "message to %s failed: %s",
                        peer,
                        e,
                    )
                    self.on_unreachable(peer)
                    backoff = min(MAX_BACKOFF, max(FIRST_BACKOFF, backoff * 2))
                    await trio.sleep(backoff)
                    _take_queued(receive)  # stale by now: the core resends what still matters
        finally:
            await connection.close()


def _take_queued(
    receive: trio.MemoryReceiveChannel[AnyMessage], limit: int = QUEUE_LIMIT
) -> list[AnyMessage]:
    """Up to ``limit`` messages already waiting in the queue, without blocking."""
    taken: list[AnyMessage] = []
    while len(taken) < limit:
        try:
            taken.append(receive.receive_nowait())
        except trio.WouldBlock:
            break
    return taken
