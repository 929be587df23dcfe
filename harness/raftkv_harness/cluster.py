"""A cluster of real ``raftkv serve`` processes on loopback, wired through a ProxyMesh, for fault tests.

Clients (the harness, workloads) talk to each node directly on its listen port; node-to-node traffic, which
includes a follower forwarding a client request to the leader, crosses the mesh, so network faults hit
exactly what a real network fault would. Every child is killed and reaped when the ``async with`` block ends,
whatever way it ends.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import trio

from raftkv.launch import (
    POLL_INTERVAL,
    NoLeader,
    agreed_leader,
    cluster_token_file,
    node_command,
    wait_for_leader,
)
from raftkv_harness.faulty_node import POWER_LOSS_ONLY, Faults
from raftkv_harness.proxy import ProxyMesh, open_proxy_mesh

HOST = "127.0.0.1"
STATUS_TIMEOUT = 1.0
STOP_GRACE = 10.0  # a node drains in-flight requests (request_timeout, 5 s by default) before it exits


class ClusterError(Exception):
    """A node did not start, did not stop, or the cluster did not agree on a leader in time."""


@dataclass
class NodeProcess:
    """One node's fixed identity (ports and data dir survive restarts) and its current process, if any."""

    id: str
    port: int
    data_dir: Path
    log_path: Path
    process: trio.Process | None = None
    paused: bool = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


def free_ports(count: int) -> list[int]:
    """Ports that are free now and lie below the ephemeral range, so no outgoing connection can take a
    node's port while it is down between a kill and a restart."""
    low = _ephemeral_range_start()
    candidates = list(range(10000, low))
    random.SystemRandom().shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise ClusterError(f"could not find {count} free loopback ports")


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class LocalCluster:
    """N ``raftkv serve`` child processes; use as ``async with LocalCluster(workdir) as cluster:``.

    ``size`` founding members start together; ``spares`` more servers have ports and proxies from the start
    but run only once ``add`` brings them in (they join through a member). ``nodes`` are the members now.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        size: int = 3,
        seed: int = 0,
        node_args: Sequence[str] = (),
        log_dir: Path | None = None,
        startup_timeout: float = 20.0,
        faults: Faults = POWER_LOSS_ONLY,
        spares: int = 0,
    ) -> None:
        self.workdir = workdir
        self.seed = seed
        self.launcher = faults.launcher()
        token_file = cluster_token_file(workdir)
        self.node_args = [*node_args, "--token-file", str(token_file)]
        self.cluster_headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        self.startup_timeout = startup_timeout
        log_dir = log_dir if log_dir is not None else workdir / "logs"
        ids = [f"n{i}" for i in range(1, size + spares + 1)]
        self._nodes = {
            node_id: NodeProcess(node_id, port, workdir / "data" / node_id, log_dir / f"{node_id}.log")
            for node_id, port in zip(ids, free_ports(len(ids)), strict=True)
        }
        self._founders = ids[:size]
        self._members = set(self._founders)
        self._joining: set[str] = set()  # started with --join instead of as founders
        self._stack = AsyncExitStack()
        self._mesh: ProxyMesh | None = None
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> LocalCluster:
        try:
            targets = {node.id: (HOST, node.port) for node in self._nodes.values()}
            self._mesh = await self._stack.enter_async_context(open_proxy_mesh(targets, seed=self.seed))
            self._http = await self._stack.enter_async_context(
                httpx.AsyncClient(timeout=STATUS_TIMEOUT, trust_env=False)
            )
            self._stack.push_async_callback(self._kill_all)
            await self.start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(kind, error, traceback)

    @property
    def nodes(self) -> list[str]:
        """The members now (founders, and servers added since, minus those removed)."""
        return sorted(self._members)

    @property
    def spares(self) -> list[str]:
        """Servers that are not members now: ``add`` brings one in."""
        return sorted(self._nodes.keys() - self._members)

    @property
    def mesh(self) -> ProxyMesh:
        if self._mesh is None:
            raise RuntimeError("the cluster is not running: use it as `async with LocalCluster(...)`")
        return self._mesh

    def node(self, node_id: str) -> NodeProcess:
        return self._nodes[node_id]

    def client_url(self, node_id: str) -> str:
        """The node's own listen address: clients bypass the mesh, as clients beside the node would."""
        return f"http://{HOST}:{self._nodes[node_id].port}"

    async def start(self) -> None:
        """Start every member that is not running, then wait until each answers ``GET /status``."""
        async with trio.open_nursery() as nursery:
            for node_id in self._members:
                if not self._nodes[node_id].alive:
                    nursery.start_soon(self._start_node, self._nodes[node_id])

    # --- membership ----------------------------------------------------------------------------------------

    async def cluster_call(
        self, method: str, path: str, body: object = None, timeout: float = 30.0
    ) -> httpx.Response:
        """A ``/cluster/*`` call with the cluster token, tried on each running member in turn (any forwards to
        the leader) until one answers other than 503/409 or ``timeout`` passes."""
        with trio.move_on_after(timeout):
            async with httpx.AsyncClient(timeout=15, trust_env=False, headers=self.cluster_headers) as client:
                while True:
                    for node_id in self.nodes:
                        if not self._nodes[node_id].alive or self._nodes[node_id].paused:
                            continue
                        try:
                            answer = await client.request(method, self.client_url(node_id) + path, json=body)
                        except httpx.HTTPError:
                            continue
                        if answer.status_code not in (409, 503):
                            return answer
                    await trio.sleep(POLL_INTERVAL)
        raise ClusterError(f"{method} {path} got no answer but 409/503 within {timeout}s")

    async def add(self, node_id: str, timeout: float = 60.0) -> None:
        """Start ``node_id`` with an empty data directory and ``--join``; return once it is a voter."""
        node = self._nodes[node_id]
        self._joining.add(node_id)
        self._members.add(node_id)
        await self._start_node(node)
        with trio.move_on_after(timeout):
            while not await self._is_voter(node_id):
                await trio.sleep(POLL_INTERVAL)
            return
        raise ClusterError(f"{node_id} did not become a voter within {timeout}s:\n{self._log_tail(node)}")

    async def remove(self, node_id: str) -> None:
        """Remove ``node_id`` from the configuration (once that commits, it is stopped) and make it a spare."""
        answer = await self.cluster_call("DELETE", f"/cluster/members/{node_id}")
        if answer.status_code not in (200, 404):
            raise ClusterError(f"removing {node_id}: {answer.status_code} {answer.text}")
        self._members.discard(node_id)
        await self.kill(node_id)

    async def replace(self, node_id: str) -> None:
        """What an operator does when a server's disk is lost: remove it, wipe its data, and add it afresh."""
        await self.remove(node_id)
        self.wipe(node_id)
        await self.add(node_id)

    def wipe(self, node_id: str) -> None:
        """Delete a (stopped) node's data directory, as a failed disk would."""
        node = self._nodes[node_id]
        if node.alive:
            raise ClusterError(f"{node_id} is running: stop it before wiping its data")
        shutil.rmtree(node.data_dir, ignore_errors=True)

    async def _is_voter(self, node_id: str) -> bool:
        try:
            answer = await self.cluster_call("GET", "/cluster/members", timeout=5)
        except ClusterError:
            return False
        members = answer.json().get("members", []) if answer.status_code == 200 else []
        return any(member["id"] == node_id and member["voter"] for member in members)

    async def stop(self) -> None:
        """Ask every node to exit (SIGTERM), and SIGKILL the ones still alive after a grace period."""
        async with trio.open_nursery() as nursery:
            for node in self._nodes.values():
                nursery.start_soon(self._stop_node, node)

    async def kill(self, node_id: str) -> None:
        """SIGKILL the node and reap it; a no-op when it is already down."""
        node = self._nodes[node_id]
        if node.process is not None and node.alive:
            node.process.kill()
            await node.process.wait()
        node.paused = False

    async def restart(self, node_id: str) -> None:
        """Kill the node if it still runs, then start it on the same ports and data dir."""
        await self.kill(node_id)
        await self._start_node(self._nodes[node_id])

    def pause(self, node_id: str) -> None:
        self._signal(node_id, signal.SIGSTOP)
        self._nodes[node_id].paused = True

    def resume(self, node_id: str) -> None:
        self._signal(node_id, signal.SIGCONT)
        self._nodes[node_id].paused = False

    async def power_loss(self, node_id: str, timeout: float = 10.0) -> int:
        """SIGUSR1 asks the node to drop what it never fsynced and die at once; returns its exit status.
        Needs the node armed for it (``Faults.power_loss``, the default)."""
        process = self._running_process(node_id)
        process.send_signal(signal.SIGUSR1)
        if self._nodes[node_id].paused:
            self.resume(node_id)
        with trio.move_on_after(timeout):
            return await process.wait()
        await self.kill(node_id)
        raise ClusterError(f"{node_id} ignored SIGUSR1 for {timeout}s; killed it")

    async def status(self, node_id: str) -> dict[str, Any] | None:
        """The node's ``GET /status`` body, or None when it is down, paused, unreachable or erroring."""
        node = self._nodes[node_id]
        if not node.alive or node.paused or self._http is None:
            return None
        try:
            response = await self._http.get(f"{self.client_url(node_id)}/status")
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if response.status_code == 200 else None

    async def statuses(self) -> dict[str, dict[str, Any] | None]:
        """Every node's status, polled concurrently."""
        found: dict[str, dict[str, Any] | None] = {}

        async def poll(node_id: str) -> None:
            found[node_id] = await self.status(node_id)

        async with trio.open_nursery() as nursery:
            for node_id in self._nodes:
                nursery.start_soon(poll, node_id)
        return found

    async def leader(self) -> str | None:
        """The leader a majority of all nodes currently name for the same term, if there is one."""
        statuses = await self.statuses()
        leader = agreed_leader([statuses[node_id] for node_id in self._members], len(self._members))
        return None if leader is None else leader[0]

    async def wait_for_leader(self, timeout: float = 10.0, *, other_than: str | None = None) -> str:
        """The id of the leader a majority agrees on (one that is not ``other_than``, say after killing it);
        ClusterError with the last statuses if none in time."""
        urls = [self.client_url(node_id) for node_id in self.nodes]
        try:
            leader_id, _ = await wait_for_leader(urls, timeout, other_than=other_than)
        except NoLeader as e:
            raise ClusterError(str(e)) from None
        return leader_id

    def _signal(self, node_id: str, signum: signal.Signals) -> None:
        self._running_process(node_id).send_signal(signum)

    def _running_process(self, node_id: str) -> trio.Process:
        process = self._nodes[node_id].process
        if process is None or process.returncode is not None:
            raise ClusterError(f"{node_id} is not running")
        return process

    def _command(self, node: NodeProcess) -> list[str]:
        """Every node knows how to reach every other (through its proxy); founders found the cluster, the rest
        join it through a founder that runs."""
        listen = f"{HOST}:{node.port}"
        peers = self.mesh.peer_urls(node.id)
        if node.id in self._joining:
            sponsor = next(m for m in self.nodes if m != node.id and self._nodes[m].alive)
            role = ["--join", self.client_url(sponsor)]
        else:
            role = ["--initial-voters", ",".join(self._founders)]
        options = [*self.node_args, *role]
        return node_command(node.id, listen, node.data_dir, peers, options=options, launcher=self.launcher)

    async def _start_node(self, node: NodeProcess) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self._command(node)
        with node.log_path.open("ab") as log:
            log.write(f"\n=== raftkv testing: starting {' '.join(command)}\n".encode())
            log.flush()
            node.process = await trio.lowlevel.open_process(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        node.paused = False
        await self._wait_until_serving(node)

    async def _wait_until_serving(self, node: NodeProcess) -> None:
        with trio.move_on_after(self.startup_timeout):
            while await self.status(node.id) is None:
                if not node.alive:
                    raise ClusterError(f"{node.id} exited while starting; log tail:\n{self._log_tail(node)}")
                await trio.sleep(POLL_INTERVAL)
            return
        raise ClusterError(
            f"{node.id} did not answer /status in {self.startup_timeout}s:\n{self._log_tail(node)}"
        )

    async def _stop_node(self, node: NodeProcess) -> None:
        if node.process is None or not node.alive:
            return
        node.process.terminate()
        if node.paused:
            self.resume(node.id)
        with trio.move_on_after(STOP_GRACE):
            await node.process.wait()
        await self.kill(node.id)

    async def _kill_all(self) -> None:
        """Last-resort cleanup: runs even when the body failed or was cancelled, so no child outlives us."""
        with trio.CancelScope(shield=True):
            for node in self._nodes.values():
                if node.process is not None and node.alive:
                    node.process.kill()
            with trio.move_on_after(STOP_GRACE):
                for node in self._nodes.values():
                    if node.process is not None:
                        await node.process.wait()

    @staticmethod
    def _log_tail(node: NodeProcess, lines: int = 30) -> str:
        try:
            return "\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
