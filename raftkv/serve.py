"""``raftkv serve``: one node -- its storage, its Raft runtime and its HTTP server -- in one Trio nursery."""

from __future__ import annotations

import functools
import logging
import random
import signal

import httpx
import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from raftkv import logs
from raftkv.api.app import app_api, begin_draining, create_app
from raftkv.config import NodeConfig
from raftkv.kv import KVStore
from raftkv.metrics import NodeMetrics
from raftkv.node import RaftNode
from raftkv.storage import FileStorage, OsDisk
from raftkv.transport import Transport

log = logging.getLogger("raftkv")

JOIN_RETRY = 1.0  # seconds between attempts to join: a change in progress or a leader election passes by then


class JoinRefused(Exception):
    """The cluster will not add this node (say, its id is taken by another URL): retrying cannot help."""


async def serve(config: NodeConfig) -> None:
    """Run one node until SIGINT/SIGTERM; in-flight requests are answered before the node stops, and a leader
    hands over its leadership first. An error in the node (a broken invariant in the core, the storage or the
    state machine) ends it, and this, at once."""
    metrics = NodeMetrics()
    disk = OsDisk(on_fsync=metrics.fsync_seconds.observe)
    # Recovery reads the whole log: in a worker thread.
    storage = await trio.to_thread.run_sync(functools.partial(FileStorage, config.data_dir, disk=disk))
    try:
        transport = Transport(config.rpc_timeout, config.cluster_token, config.peer_tls())
        metrics.observe_queues(transport.queue_depths)
        node = RaftNode(config, storage, transport, random.Random(), KVStore, metrics=metrics)
        logs.follow(lambda: (node.core.term, node.core.role.value))
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            app = create_app(node)
            nursery.start_soon(_watch_signals, stop, app, node)
            await nursery.start(node.run)
            nursery.start_soon(app_api(app).leases.run)
            if config.insecure and config.cluster_token is None:
                log.warning(
                    "running without a cluster token (--insecure): anyone who reaches %s can send Raft "
                    "messages and rewrite the data",
                    config.listen,
                )
            if config.join is not None and not node.core.membership.members:
                nursery.start_soon(join, config, node)
            log.info("node %s serving on %s, members %s", config.id, config.advertised_url, node.members())
            await hypercorn.trio.serve(app, hypercorn_config(config), shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()
    finally:
        storage.close()
    log.info("node %s stopped", config.id)


async def join(config: NodeConfig, node: RaftNode[KVStore]) -> None:
    """Ask the cluster at ``config.join`` to add this node (a learner, promoted once caught up), until it has;
    any member forwards the request to the leader. The answer says where the members are."""
    assert config.join is not None
    body = {"id": config.id, "url": config.advertised_url}
    headers = {"Authorization": f"Bearer {config.cluster_token}"} if config.cluster_token else {}
    async with httpx.AsyncClient(
        timeout=config.request_timeout + 2, verify=config.peer_tls() or True
    ) as client:
        while True:
            try:
                answer = await client.post(
                    f"{config.join.rstrip('/')}/cluster/members", json=body, headers=headers
                )
            except httpx.HTTPError as e:
                log.warning("cannot reach %s to join: %s", config.join, e)
            else:
                if answer.status_code == 200:
                    node.learn_routes({member["id"]: member["url"] for member in answer.json()["members"]})
                    log.info("joined the cluster through %s", config.join)
                    return
                if answer.status_code not in (409, 503):
                    raise JoinRefused(
                        f"{config.join} refused to add {config.id}: {answer.status_code} {answer.text}"
                    )
                log.info("joining through %s: %s; retrying", config.join, answer.json().get("error"))
            await trio.sleep(JOIN_RETRY)


def hypercorn_config(config: NodeConfig) -> hypercorn.config.Config:
    http = hypercorn.config.Config()
    http.bind = [config.listen]
    http.accesslog = None
    http.errorlog = logging.getLogger("hypercorn.error")  # through our handler, in --log-format, not its own
    http.graceful_timeout = config.request_timeout
    if config.cert_file is not None and config.key_file is not None:
        http.certfile, http.keyfile = str(config.cert_file), str(config.key_file)
    return http


async def _watch_signals(stop: trio.Event, app: QuartTrio, node: RaftNode[KVStore]) -> None:
    """SIGINT/SIGTERM: a leader hands over first (so clients do not wait out an election), then the server
    drains its requests and the node stops."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            await node.hand_over()
            begin_draining(app)
            stop.set()
