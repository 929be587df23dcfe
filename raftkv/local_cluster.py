"""``raftkv cluster``: a local cluster of ``raftkv serve`` child processes on loopback, until Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import BinaryIO

import trio

from raftkv.launch import NoLeader, Statuses, cluster_token_file, node_command, wait_for_leader
from raftkv.progress import ProgressLine

HOST = "127.0.0.1"


async def run_cluster(nodes: int, base_port: int, data_dir: Path) -> None:
    """Start ``nodes`` child processes sharing a generated cluster token, report the leader, and stop them all
    when cancelled (Ctrl-C, SIGTERM)."""
    urls = {f"n{i + 1}": f"http://{HOST}:{base_port + i}" for i in range(nodes)}
    token_file = cluster_token_file(data_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        for i, (node_id, url) in enumerate(urls.items()):
            peers = {p: u for p, u in urls.items() if p != node_id}
            command = node_command(
                node_id,
                f"{HOST}:{base_port + i}",
                data_dir / node_id,
                peers,
                options=["--token-file", str(token_file)],
            )
            log_file = (data_dir / f"{node_id}.log").open("ab")
            nursery.start_soon(_run_child, command, log_file)
            print(f"{node_id}  {url}  (log: {data_dir / f'{node_id}.log'})", flush=True)
        print(f'cluster token: {token_file} (curl -H "Authorization: Bearer $(cat {token_file})" ...)')
        progress = ProgressLine()
        term = 0

        def show(statuses: Statuses) -> None:
            nonlocal term
            answering = [status for status in statuses if status is not None]
            term = max((int(status["term"]) for status in answering), default=0)
            progress.update(f"waiting for a leader... {len(answering)}/{nodes} nodes answer, term {term}")

        try:
            leader = await wait_for_leader(list(urls.values()), on_poll=show)
            progress.finish(f"{leader[0]} leads term {term}")
            print(f"leader: {' '.join(leader)}", flush=True)
        except NoLeader:
            progress.finish("no leader elected yet: see the logs")
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
