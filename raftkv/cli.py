"""The ``raftkv`` command: ``serve`` runs one node, ``cluster`` runs a local cluster of child processes."""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import BinaryIO

import httpx
import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from raftkv.api.app import DRAINING, create_app
from raftkv.config import ConfigError, NodeConfig, load_config, parse_peers
from raftkv.node import RaftNode
from raftkv.storage import FileStorage
from raftkv.transport import Transport

log = logging.getLogger("raftkv")


# --- raftkv serve -------------------------------------------------------------------------------------------


async def serve(config: NodeConfig) -> None:
    """Run one node until SIGINT/SIGTERM; in-flight requests are answered before the node stops."""
    storage = FileStorage(config.data_dir)
    try:
        node = RaftNode(
            config, storage, Transport(config.peers, config.rpc_timeout, config.token), random.Random()
        )
        http = hypercorn.config.Config()
        http.bind = [config.listen]
        http.accesslog = None
        http.graceful_timeout = config.request_timeout
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            app = create_app(node)
            nursery.start_soon(_watch_signals, stop, app, storage if config.test_power_loss else None)
            await nursery.start(node.run)
            log.info("node %s serving on %s, peers %s", config.id, config.advertised_url, config.peers)
            await hypercorn.trio.serve(app, http, shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()
    finally:
        storage.close()
    log.info("node %s stopped", config.id)


async def _watch_signals(stop: trio.Event, app: QuartTrio, power_loss_storage: FileStorage | None) -> None:
    wanted = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGUSR1} if power_loss_storage else set())
    with trio.open_signal_receiver(*wanted) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1 and power_loss_storage is not None:
                log.warning("simulated power loss: dropping unsynced writes and exiting")
                power_loss_storage.simulate_power_loss(random.Random())
                os._exit(137)
            app.config[DRAINING] = True
            stop.set()


# --- raftkv cluster -----------------------------------------------------------------------------------------


def node_command(node_id: str, port: int, peers: dict[str, int], data_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "raftkv", "serve", "--id", node_id, "--listen", f"127.0.0.1:{port}"]
    for peer, peer_port in peers.items():
        command += ["--peer", f"{peer}=http://127.0.0.1:{peer_port}"]
    return [*command, "--data-dir", str(data_dir / node_id)]


async def run_cluster(nodes: int, base_port: int, data_dir: Path) -> None:
    """Start ``nodes`` child processes, report the leader, and stop them all when cancelled (Ctrl-C)."""
    ports = {f"n{i + 1}": base_port + i for i in range(nodes)}
    data_dir.mkdir(parents=True, exist_ok=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        for node_id, port in ports.items():
            peers = {p: q for p, q in ports.items() if p != node_id}
            log_file = (data_dir / f"{node_id}.log").open("ab")
            nursery.start_soon(_run_child, node_command(node_id, port, peers, data_dir), log_file)
            print(f"{node_id}  http://127.0.0.1:{port}  (log: {data_dir / f'{node_id}.log'})", flush=True)
        leader = await _wait_for_leader(list(ports.values()))
        print(f"leader: {leader}" if leader else "no leader elected yet: see the logs", flush=True)
        print("Ctrl-C stops the cluster.", flush=True)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """Ctrl-C or SIGTERM: cancel the children's tasks, which terminates each node and waits for it."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("stopping the cluster", flush=True)
            scope.cancel()
            return


async def _run_child(command: list[str], log_file: BinaryIO) -> None:
    try:
        await trio.run_process(command, stdout=log_file, stderr=log_file, check=False)
    finally:
        log_file.close()


async def _wait_for_leader(ports: list[int], timeout: float = 20.0) -> str | None:
    """The leader's id and URL, as reported by a node, once one is elected (None after ``timeout``)."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        with trio.move_on_after(timeout):
            while True:
                for port in ports:
                    try:
                        leader = (await client.get(f"http://127.0.0.1:{port}/status")).json().get("leader")
                    except (httpx.HTTPError, ValueError):
                        continue
                    if leader:
                        return f"{leader['id']} {leader['url']}"
                await trio.sleep(0.2)
    return None


# --- argument parsing ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftkv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("serve", help="run one node")
    s.add_argument("--config", type=Path, help="a TOML file of settings (keys as the flags, with _)")
    s.add_argument("--id", help="this node's id")
    s.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:8080)")
    s.add_argument("--url", help="the URL peers and clients reach this node at (default http://LISTEN)")
    s.add_argument("--peer", action="append", default=[], metavar="ID=URL", help="another voter (repeat)")
    s.add_argument("--data-dir", type=Path, help="where term, vote, log and snapshots live")
    s.add_argument("--tick-ms", type=int, help="length of one Raft tick (default 50)")
    s.add_argument(
        "--election-ticks", type=int, help="election timeout in ticks (default 16, randomized x1-2)"
    )
    s.add_argument("--heartbeat-ticks", type=int, help="heartbeat interval in ticks (default 2)")
    s.add_argument("--snapshot-entries", type=int, help="snapshot after this many applied entries")
    s.add_argument("--token", help="cluster token required on Raft RPCs")
    s.add_argument("--log-level", help="debug, info, warning, error")
    s.add_argument("--test-power-loss", action="store_true", default=None, help=argparse.SUPPRESS)
    s.add_argument("--test-unsafe-local-reads", action="store_true", default=None, help=argparse.SUPPRESS)

    c = commands.add_parser("cluster", help="run a local cluster of child processes until Ctrl-C")
    c.add_argument("--nodes", type=int, default=3)
    c.add_argument("--base-port", type=int, default=8080)
    c.add_argument("--data-dir", type=Path, default=Path(".raftkv"))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "cluster":
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        trio.run(run_cluster, args.nodes, args.base_port, args.data_dir)
        print("cluster stopped")
        return
    names = "id listen url data_dir tick_ms election_ticks heartbeat_ticks snapshot_entries token log_level"
    names += " test_power_loss test_unsafe_local_reads"
    flags = {name: getattr(args, name) for name in names.split()}
    try:
        flags["peers"] = parse_peers(args.peer)
        config = load_config(flags, args.config)
    except ConfigError as e:
        sys.exit(f"raftkv serve: {e}")
    logging.basicConfig(
        level=config.log_level.upper(), format=f"%(asctime)s {config.id} %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Raft message is noise
    trio.run(serve, config)
