"""Run a local cluster of real ``raftkv serve`` processes from synchronous code (benchmarks, spec tests).

The chaos harness (``cluster.py``) does the same under Trio with proxies in between; this one is the plain
wiring: every node talks to the others directly. Both build command lines and wait for a leader through
``raftkv.launch``.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import trio

from raftkv.launch import cluster_token_file, node_command, wait_for_leader
from raftkv_harness.cluster import HOST, free_ports


def leader_url(urls: list[str], timeout: float = 30.0) -> str:
    """The URL of the leader a majority of ``urls`` agrees on (NoLeader after ``timeout``)."""
    return trio.run(lambda: wait_for_leader(urls, timeout))[1]


@contextlib.contextmanager
def local_cluster(nodes: int = 3, extra_args: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Start ``nodes`` processes on free ports with data (and a cluster token) in a temporary directory;
    yield their URLs once a leader is elected; stop them all (SIGTERM, then SIGKILL) on exit."""
    ports = dict(zip([f"n{i + 1}" for i in range(nodes)], free_ports(nodes), strict=True))
    urls = {node_id: f"http://{HOST}:{port}" for node_id, port in ports.items()}
    with tempfile.TemporaryDirectory(prefix="raftkv-") as tmp, contextlib.ExitStack() as stack:
        data_dir = Path(tmp)
        token = ("--token-file", str(cluster_token_file(data_dir)))
        procs = []
        for node_id, port in ports.items():
            peers = {p: u for p, u in urls.items() if p != node_id}
            log = stack.enter_context((data_dir / f"{node_id}.log").open("wb"))
            command = node_command(
                node_id, f"{HOST}:{port}", data_dir / node_id, peers, options=[*token, *extra_args]
            )
            procs.append(subprocess.Popen(command, stdout=log, stderr=log))
        try:
            leader_url(list(urls.values()))
            yield list(urls.values())
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
