"""``raftkv cluster``: a local cluster of ``raftkv serve`` child processes on loopback, until Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlencode

import trio

from raftkv.cluster_control import HOST, Supervisor, serve_control
from raftkv.launch import NoLeader, Statuses, cluster_token_file, wait_for_leader
from raftkv.progress import ProgressLine


async def run_cluster(nodes: int, base_port: int, data_dir: Path) -> None:
    """Start ``nodes`` child processes sharing a generated cluster token and the control API of the
    dashboard's fault buttons, report the leader and the dashboard's address, and stop them all when
    cancelled (Ctrl-C, SIGTERM)."""
    urls = {f"n{i + 1}": f"http://{HOST}:{base_port + i}" for i in range(nodes)}
    token_file = cluster_token_file(data_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        supervisor = Supervisor(nursery, data_dir, token_file.read_text().strip(), token_file)
        for i, node_id in enumerate(urls):
            peers = {p: u for p, u in urls.items() if p != node_id}
            child = supervisor.add(node_id, base_port + i, peers, [])
            await supervisor.start(child)
            print(f"{node_id}  {child.url}  (log: {child.log_path})", flush=True)
        (control,) = await nursery.start(serve_control, supervisor)
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
        fragment = urlencode({"token": supervisor.token, "control": control})
        print(f"dashboard: {urls['n1']}/dashboard#{fragment}", flush=True)
        print("Ctrl-C stops the cluster.", flush=True)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """Ctrl-C or SIGTERM: cancel the children's tasks, which terminates each node and waits for it."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("stopping the cluster", flush=True)
            scope.cancel()
            return
