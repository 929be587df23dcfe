"""The fault buttons of the dashboard, in the cluster ``raftkv cluster`` runs: the supervisor of the child
processes serves a small HTTP API on loopback that kills (SIGKILL), restarts, pauses (SIGSTOP), resumes
(SIGCONT) and partitions its children, and starts new members that join the cluster.

Only the supervisor can signal its children, so the calls come to it; every call needs the cluster token,
and the answers allow the origins of the children (CORS), whose dashboards call it. A partition is the
node's own doing (``PUT /cluster/partition``, which ``raftkv cluster`` enables on its children): the node
drops every peer message to and from the others.
"""

from __future__ import annotations

import hmac
import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx
import hypercorn.config
import hypercorn.trio
import trio
from quart import Response, request
from quart_trio import QuartTrio

from raftkv.api.errors import JSON_MEDIA_TYPE, error_response
from raftkv.api.events import origin_of
from raftkv.launch import node_command

HOST: Final = "127.0.0.1"
STOP_PATIENCE: Final = 10.0  # seconds a child gets to stop after SIGTERM before SIGKILL
CALL_TIMEOUT: Final = 5.0  # seconds for a child to answer a partition call
FAULT_OPTIONS: Final = ("--allow-fault-injection",)


@dataclass
class Child:
    """One ``raftkv serve`` process, started again as the same node on restart."""

    id: str
    url: str
    command: list[str]
    log_path: Path
    process: trio.Process | None = None
    paused: bool = False
    partitioned: bool = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def view(self) -> dict[str, object]:
        state = "paused" if self.paused else "running" if self.running else "killed"
        return {"id": self.id, "url": self.url, "state": state, "partitioned": self.partitioned}


@dataclass
class Supervisor:
    """The children of one ``raftkv cluster``; each runs in a task of ``nursery``."""

    nursery: trio.Nursery
    data_dir: Path
    token: str
    token_file: Path
    children: dict[str, Child] = field(default_factory=dict)

    def add(self, node_id: str, port: int, peers: dict[str, str], options: list[str]) -> Child:
        command = node_command(
            node_id,
            f"{HOST}:{port}",
            self.data_dir / node_id,
            peers,
            options=["--token-file", str(self.token_file), *FAULT_OPTIONS, *options],
        )
        child = Child(node_id, f"http://{HOST}:{port}", command, self.data_dir / f"{node_id}.log")
        self.children[node_id] = child
        return child

    async def start(self, child: Child) -> None:
        child.paused = child.partitioned = False
        child.process = await self.nursery.start(self._run, child)

    async def _run(self, child: Child, *, task_status: trio.TaskStatus[trio.Process]) -> None:
        with child.log_path.open("ab") as log:
            await trio.run_process(
                child.command,
                stdout=log,
                stderr=log,
                check=False,
                deliver_cancel=_resume_then_stop,
                task_status=task_status,
            )

    async def join_new(self) -> Child:
        """A fresh node on the next port, joining through a running member (it asks to be added itself)."""
        number = 1 + max(int(node_id.removeprefix("n")) for node_id in self.children)
        port = 1 + max(urlsplit(child.url).port or 0 for child in self.children.values())
        through = next((c.url for c in self.children.values() if c.running and not c.paused), None)
        if through is None:
            raise ValueError("no running member to join through")
        child = self.add(f"n{number}", port, {}, ["--join", through])
        await self.start(child)
        return child

    async def act(self, child: Child, action: str) -> None:
        """One button: kill, restart, pause, resume, partition or heal ``child``."""
        process = child.process
        if action == "restart":
            if process is not None and child.running:
                process.kill()
                await process.wait()
            await self.start(child)
            return
        if process is None or not child.running:
            raise ValueError(f"{child.id} is not running")
        if action == "kill":
            process.kill()
            await process.wait()
            child.paused = child.partitioned = False
        elif action in ("pause", "resume"):
            child.paused = action == "pause"
            process.send_signal(signal.SIGSTOP if child.paused else signal.SIGCONT)
        else:
            others = [other for other in self.children if other != child.id] if action == "partition" else []
            async with httpx.AsyncClient(timeout=CALL_TIMEOUT, trust_env=False) as client:
                answer = await client.put(
                    f"{child.url}/cluster/partition",
                    json={"peers": others},
                    headers={"Authorization": f"Bearer {self.token}"},
                )
            if answer.status_code != 200:
                raise ValueError(f"{child.id} answered {answer.status_code}: {answer.text}")
            child.partitioned = action == "partition"


ACTIONS: Final = frozenset({"kill", "restart", "pause", "resume", "partition", "heal"})


def control_app(supervisor: Supervisor) -> QuartTrio:
    """``GET /nodes``, ``POST /nodes`` (a new member) and ``POST /nodes/<id>/<action>``; each answers
    ``{"nodes": [...]}``, every child's id, URL, state (running, paused, killed) and whether it is cut off."""
    app = QuartTrio(__name__, static_folder=None)

    def nodes() -> Response:
        body = {"nodes": [child.view() for child in supervisor.children.values()]}
        return Response(json.dumps(body), content_type=JSON_MEDIA_TYPE)

    @app.before_request
    async def guard() -> Response | None:
        if request.method == "OPTIONS":
            return None
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {supervisor.token}".encode()):
            return error_response(
                401, "missing or wrong cluster token", headers={"WWW-Authenticate": "Bearer"}
            )
        return None

    @app.after_request
    async def allow_children(response: Response) -> Response:
        origins = {origin_of(child.url) for child in supervisor.children.values()}
        if (origin := request.headers.get("Origin")) in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Vary"] = "Origin"
        return response

    @app.get("/nodes")
    async def list_nodes() -> Response:
        return nodes()

    @app.post("/nodes")
    async def add_node() -> Response:
        return await _refusing_bad_actions(supervisor.join_new, nodes)

    @app.post("/nodes/<node_id>/<action>")
    async def act(node_id: str, action: str) -> Response:
        child = supervisor.children.get(node_id)
        if child is None:
            return error_response(404, f"no node {node_id!r}")
        if action not in ACTIONS:
            return error_response(404, f"no action {action!r}; one of {', '.join(sorted(ACTIONS))}")
        return await _refusing_bad_actions(partial(supervisor.act, child, action), nodes)

    return app


async def _refusing_bad_actions(
    action: Callable[[], Awaitable[object]], answer: Callable[[], Response]
) -> Response:
    """The action's answer, or a 409 that says why it cannot be done now."""
    try:
        await action()
    except (ValueError, httpx.HTTPError) as e:
        return error_response(409, str(e))
    return answer()


async def serve_control(
    supervisor: Supervisor, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the control API on a free loopback port until cancelled; started with the URLs it serves at."""
    config = hypercorn.config.Config()
    config.bind = [f"{HOST}:0"]
    config.accesslog = None
    config.errorlog = None
    await hypercorn.trio.serve(control_app(supervisor), config, task_status=task_status)


async def _resume_then_stop(process: trio.Process) -> None:
    """Stop a child that may be paused: SIGCONT first, or SIGTERM would wait for it forever."""
    process.send_signal(signal.SIGCONT)
    process.terminate()
    with trio.move_on_after(STOP_PATIENCE):
        await process.wait()
        return
    process.kill()
