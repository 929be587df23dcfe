"""Raft messages to peers: one sender task per peer, streaming its messages on one long HTTP request.

Each peer gets a stream (``POST /raft/stream``, see ``peer_http.PeerStream``): whatever queued up while the
previous chunk was being written goes out as the next chunk, one message per line, so a busy link costs one
write per batch and no request handling per message at either end. Raft tolerates lost, duplicated and
reordered messages, so the transport keeps no promises beyond "probably, in order": each peer has a bounded
queue; when it is full the newest message is dropped, and when the stream breaks (the peer is down, paused
past the timeout, or refused a message) the queue is flushed (the core resends what still matters on the next
heartbeat) and the core is told, so it stops pipelining to that peer; a new stream opens after a backoff. A
dead or paused peer therefore costs one timeout per backoff period and never delays the other peers.

Who the peers are follows the membership: ``set_routes`` starts a sender for a new member and stops the one
of a member that left. An InstallSnapshot carries only the snapshot's description; before it goes out, a
shipper task of its own streams the snapshot's data to the peer in chunks (resuming where the peer says it
stands), so a large transfer never holds up the heartbeats on the sender's connection.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import urlencode

import trio

from raftkv.forwarding import PeerMessage
from raftkv.peer_http import PeerConnection, PeerError, PeerStream
from raftkv.raft.types import InstallSnapshot, NodeId, Snapshot
from raftkv.wire import (
    MAX_BATCH_MESSAGES,
    RAFT_STREAM_PATH,
    RAFT_STREAM_TYPE,
    SNAPSHOT_CHUNK_PATH,
    dump_raft_message,
)

log = logging.getLogger(__name__)

QUEUE_LIMIT = 512  # messages waiting per peer; more are dropped (the core resends what matters)
MAX_BATCH_BYTES = 8 << 20  # one chunk of queued messages carries at most about this much JSON
SNAPSHOT_CHUNK_BYTES = 1 << 20  # snapshot data goes in chunks of this size: one POST each
FIRST_BACKOFF = 0.05  # seconds after a first failure: one heartbeat interval (100 ms) of tries is kept
MAX_BACKOFF = 1.0  # doubling up to this: a peer that comes back is reached within a second

SnapshotSource = Callable[[Snapshot], Awaitable[tuple[BinaryIO, int, int]]]
"""Opens a snapshot's data for shipping: (file, size, CRC-32)."""


@dataclass
class _Peer:
    url: str
    queue: tuple[trio.MemorySendChannel[PeerMessage], trio.MemoryReceiveChannel[PeerMessage]]
    sender: trio.CancelScope = field(default_factory=trio.CancelScope)
    shipping: tuple[trio.CancelScope, Snapshot] | None = None


class Transport:
    def __init__(
        self,
        rpc_timeout: float,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.rpc_timeout = rpc_timeout
        self.tls = tls
        self.snapshots: SnapshotSource | None = None  # set by the node, like on_unreachable
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.on_unreachable: Callable[[str], None] = lambda peer: None
        self._peers: dict[NodeId, _Peer] = {}
        self._nursery: trio.Nursery | None = None

    def set_routes(self, routes: Mapping[NodeId, str]) -> None:
        """Send to exactly these peers from now on; a peer whose URL changed gets a fresh sender."""
        for node in list(self._peers):
            if routes.get(node) != self._peers[node].url:
                self._stop(self._peers.pop(node))
        for node, url in routes.items():
            if node not in self._peers:
                self._peers[node] = _Peer(url, trio.open_memory_channel[PeerMessage](QUEUE_LIMIT))
                self._start(node)

    def send(self, message: PeerMessage) -> None:
        """Queue ``message`` for its destination without blocking. A full queue drops it and tells the core,
        which then stops assuming its pipelined messages arrive."""
        peer = self._peers.get(message.dst)
        if peer is None:
            return
        if isinstance(message, InstallSnapshot):
            self._ship(message.dst, peer, message)
            return
        try:
            peer.queue[0].send_nowait(message)
        except trio.WouldBlock:
            self.on_unreachable(message.dst)

    def queue_depths(self) -> dict[NodeId, int]:
        """Messages waiting for each peer (for the metrics)."""
        return {node: peer.queue[0].statistics().current_buffer_used for node, peer in self._peers.items()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for node in self._peers:
                self._start(node)
            task_status.started()
            await trio.sleep_forever()

    # --- senders ---------------------------------------------------------------------------------------

    def _start(self, node: NodeId) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._sender, node, self._peers[node])

    def _stop(self, peer: _Peer) -> None:
        peer.sender.cancel()
        if peer.shipping is not None:
            peer.shipping[0].cancel()

    async def _sender(self, node: NodeId, peer: _Peer) -> None:
        """Stream what queues up for ``node``; after a break, report it, drop what queued meanwhile and open a
        new stream after a backoff (doubling while the peer stays unreachable)."""
        receive = peer.queue[1]
        stream = PeerStream(peer.url, self.rpc_timeout, self.headers, self.tls)
        backoff = 0.0
        with peer.sender:
            while True:
                sent = 0

                async def next_chunk() -> bytes:
                    nonlocal sent
                    chunk = _batch(await receive.receive(), receive)
                    sent += 1
                    return chunk

                reason = await stream.run(RAFT_STREAM_PATH, RAFT_STREAM_TYPE, next_chunk)
                # A stream that carried a chunk before the one it broke on was healthy: start the backoff over.
                backoff = FIRST_BACKOFF if sent > 1 else min(MAX_BACKOFF, max(FIRST_BACKOFF, backoff * 2))
                log.log(
                    logging.WARNING if backoff == FIRST_BACKOFF else logging.DEBUG,
                    "stream to %s broke (%s); reopening in %.2fs",
                    node,
                    reason,
                    backoff,
                )
                self.on_unreachable(node)
                await trio.sleep(backoff)
                _drain(receive)  # stale by now: the core resends what still matters

    # --- snapshot shipping -----------------------------------------------------------------------------

    def _ship(self, node: NodeId, peer: _Peer, message: InstallSnapshot) -> None:
        """Ship the data of ``message.snapshot``, then the message; a newer snapshot replaces one in flight."""
        if peer.shipping is not None:
            scope, snapshot = peer.shipping
            if snapshot == message.snapshot:
                return  # already on its way
            scope.cancel()
        if self._nursery is None or self.snapshots is None:
            return
        scope = trio.CancelScope()
        peer.shipping = (scope, message.snapshot)
        self._nursery.start_soon(self._shipper, node, peer, message, scope)

    async def _shipper(
        self, node: NodeId, peer: _Peer, message: InstallSnapshot, scope: trio.CancelScope
    ) -> None:
        assert self.snapshots is not None
        snapshot = message.snapshot
        connection = PeerConnection(peer.url, self.rpc_timeout, self.headers, self.tls)
        with scope:
            try:
                data, size, crc = await self.snapshots(snapshot)
                with data:
                    await _ship_data(connection, data, snapshot, size, crc)
                log.info("shipped snapshot %d (%d bytes) to %s", snapshot.index, size, node)
                peer.queue[0].send_nowait(message)
            except (PeerError, OSError, ValueError, trio.WouldBlock) as e:
                log.warning(
                    "shipping snapshot %d to %s stopped (%s); it resumes when resent", snapshot.index, node, e
                )
                self.on_unreachable(node)
            finally:
                await connection.close()
                if peer.shipping is not None and peer.shipping[0] is scope:
                    peer.shipping = None


async def _ship_data(
    connection: PeerConnection, data: BinaryIO, snapshot: Snapshot, size: int, crc: int
) -> None:
    """Send chunks from where the receiver stands (it tells us after each chunk, so a transfer cut off
    earlier resumes) until it holds all of the data and has checked it."""
    query = {"index": snapshot.index, "term": snapshot.term, "size": size, "crc": crc}
    offset, complete = 0, False
    while not complete:
        await trio.to_thread.run_sync(data.seek, offset)
        chunk: bytes = await trio.to_thread.run_sync(data.read, SNAPSHOT_CHUNK_BYTES)
        target = f"{SNAPSHOT_CHUNK_PATH}?{urlencode({**query, 'offset': offset})}"
        status, body = await connection.post(target, chunk, content_type="application/octet-stream")
        if status != 200:
            raise PeerError(f"answered {status} to a snapshot chunk: {body[:200]!r}")
        try:
            answer = json.loads(body)
            offset, complete = int(answer["offset"]), bool(answer["complete"])
        except (ValueError, KeyError, TypeError) as e:
            raise PeerError(f"unreadable answer to a snapshot chunk: {e}") from None
        if not complete and not chunk:
            raise PeerError(f"the receiver wants data beyond the end ({offset} of {size})")


def _batch(first: PeerMessage, receive: trio.MemoryReceiveChannel[PeerMessage]) -> bytes:
    """One chunk of the stream: ``first`` and what else is queued (up to MAX_BATCH_MESSAGES, and about
    MAX_BATCH_BYTES), one message per line."""
    encoded = [dump_raft_message(first)]
    size = len(encoded[0])
    while len(encoded) < MAX_BATCH_MESSAGES and size < MAX_BATCH_BYTES:
        try:
            encoded.append(dump_raft_message(receive.receive_nowait()))
        except trio.WouldBlock:
            break
        size += len(encoded[-1])
    encoded.append(b"")
    return b"\n".join(encoded)


def _drain(receive: trio.MemoryReceiveChannel[PeerMessage]) -> None:
    """Drop every message already waiting in the queue."""
    while True:
        try:
            receive.receive_nowait()
        except trio.WouldBlock:
            return
