"""Raft messages to peers: one-way HTTP POSTs, one sender task and one keep-alive connection per peer.

Raft tolerates lost, duplicated and reordered messages, so the transport keeps no promises beyond "probably,
in order": each peer has a bounded queue; when it is full the newest message is dropped, and when a POST
fails the queue is flushed (the core resends what still matters on the next heartbeat) and the core is told,
so it stops pipelining to that peer. A dead or paused peer therefore costs one timeout per backoff period and
never delays the other peers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import httpx
import trio

from raftkv.api.models import dump_raft_message, raft_path
from raftkv.raft.types import AnyMessage

log = logging.getLogger(__name__)

QUEUE_LIMIT = 512
MAX_BACKOFF = 1.0


class Transport:
    def __init__(self, peers: dict[str, str], rpc_timeout: float, token: str | None = None) -> None:
        self.peers = peers
        self.rpc_timeout = rpc_timeout
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.on_unreachable: Callable[[str], None] = lambda peer: None
        self._queues = {peer: trio.open_memory_channel[AnyMessage](QUEUE_LIMIT) for peer in peers}

    def send(self, message: AnyMessage) -> None:
        """Queue ``message`` for its destination without blocking; drop it if the queue is full."""
        queue = self._queues.get(message.dst)
        if queue is None:
            return
        with contextlib.suppress(trio.WouldBlock):
            queue[0].send_nowait(message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for peer, url in self.peers.items():
                nursery.start_soon(self._sender, peer, url)
            task_status.started()

    async def _sender(self, peer: str, url: str) -> None:
        receive = self._queues[peer][1]
        backoff = 0.0
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=self.rpc_timeout, limits=limits) as client:
            async for message in receive:
                try:
                    response = await client.post(
                        raft_path(message), content=dump_raft_message(message), headers=self.headers
                    )
                    if response.status_code >= 300:
                        raise httpx.HTTPStatusError(
                            f"{response.status_code}: {response.text[:200]}",
                            request=response.request,
                            response=response,
                        )
                    backoff = 0.0
                except httpx.HTTPError as e:
                    log.debug("message to %s failed: %s", peer, e)
                    self.on_unreachable(peer)
                    _flush(receive)
                    backoff = min(MAX_BACKOFF, max(0.05, backoff * 2))
                    await trio.sleep(backoff)
                    _flush(receive)


def _flush(receive: trio.MemoryReceiveChannel[AnyMessage]) -> None:
    """Drop what queued up for an unreachable peer: it is stale, and the core resends what matters."""
    while True:
        try:
            receive.receive_nowait()
        except trio.WouldBlock:
            return
