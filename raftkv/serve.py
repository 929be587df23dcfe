"""``raftkv serve``: one node -- its storage, its Raft runtime and its HTTP server -- in one Trio nursery."""

from __future__ import annotations

import logging
import random
import signal

import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from raftkv.api.app import DRAINING, create_app
from raftkv.config import NodeConfig
from raftkv.kv import KVStore
from raftkv.node import RaftNode
from raftkv.storage import FileStorage
from raftkv.transport import Transport

log = logging.getLogger("raftkv")


async def serve(config: NodeConfig) -> None:
    """Run one node until SIGINT/SIGTERM; in-flight requests are answered before the node stops. An error in
    the node (a broken invariant in the core, the storage or the state machine) ends it, and this, at once."""
    storage = FileStorage(config.data_dir)
    try:
        transport = Transport(config.peers, config.rpc_timeout, config.cluster_token, config.peer_tls())
        node = RaftNode(config, storage, transport, random.Random(), KVStore)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            app = create_app(node)
            nursery.start_soon(_watch_signals, stop, app)
            await nursery.start(node.run)
            if config.cluster_token is None:
                log.warning(
                    "running without a cluster token (--insecure): anyone who reaches %s can send Raft "
                    "messages and rewrite the data",
                    config.listen,
                )
            log.info("node %s serving on %s, peers %s", config.id, config.advertised_url, config.peers)
            await hypercorn.trio.serve(app, hypercorn_config(config), shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()
    finally:
        storage.close()
    log.info("node %s stopped", config.id)


def hypercorn_config(config: NodeConfig) -> hypercorn.config.Config:
    http = hypercorn.config.Config()
    http.bind = [config.listen]
    http.accesslog = None
    http.graceful_timeout = config.request_timeout
    if config.cert_file is not None and config.key_file is not None:
        http.certfile, http.keyfile = str(config.cert_file), str(config.key_file)
    return http


async def _watch_signals(stop: trio.Event, app: QuartTrio) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            app.config[DRAINING] = True
            stop.set()
