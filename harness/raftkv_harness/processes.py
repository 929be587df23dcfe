"""Run a local cluster of real ``raftkv serve`` processes from synchronous code (benchmarks, spec tests).

The chaos harness (``cluster.py``) does the same under Trio with proxies in between; this one is the plain
wiring: every node talks to the others directly. Both build command lines and wait for a leader through
``raftkv.launch``.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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


@dataclass(frozen=True)
class CommandCluster:
    """What ``raftkv cluster`` printed: its dashboard's address, and what that address's fragment holds."""

    dashboard: str
    token: str
    control: str
    urls: list[str]


@contextlib.contextmanager
def raftkv_cluster(data_dir: Path, nodes: int = 3, timeout: float = 60.0) -> Iterator[CommandCluster]:
    """Run ``raftkv cluster`` itself (the supervisor and its children) on free ports until exit, which stops
    it as Ctrl-C does; yields once it has printed the dashboard's address (after a leader was elected)."""
    base = consecutive_free_ports(nodes)
    command = [sys.executable, "-m", "raftkv", "cluster", "--nodes", str(nodes), "--base-port", str(base)]
    process = subprocess.Popen(
        [*command, "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        dashboard = read_line_with(process, "dashboard: ", timeout)
        fragment = parse_qs(urlsplit(dashboard).fragment)
        urls = [f"http://{HOST}:{port}" for port in range(base, base + nodes)]
        yield CommandCluster(dashboard, fragment["token"][0], fragment["control"][0], urls)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now (``raftkv cluster`` takes a base)."""
    for _ in range(1000):
        base = random.SystemRandom().randrange(20000, 30000)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind((HOST, port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def read_line_with(process: subprocess.Popen[bytes], prefix: str, timeout: float) -> str:
    """The rest of the first line ``process`` prints that starts with ``prefix``, waiting at most ``timeout``
    seconds (unbuffered reads: a line already read into a buffer would not wake ``select``)."""
    assert process.stdout is not None
    fd, printed, end = process.stdout.fileno(), b"", time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        printed += chunk
        for line in printed.decode().splitlines(keepends=True):
            if line.startswith(prefix) and line.endswith("\n"):
                return line.removeprefix(prefix).strip()
    raise AssertionError(f"the process printed no {prefix!r} line in {timeout}s: {printed.decode()}")
