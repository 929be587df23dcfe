"""Run a local cluster of real ``raftkv serve`` processes from synchronous code (benchmarks, spec tests).

The chaos harness (``cluster.py``) does the same under Trio with proxies in between; this one is the plain
wiring: every node talks to the others directly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from raftkv.cli import node_command
from raftkv.testing.cluster import free_ports


def get_json(url: str, timeout: float = 2.0) -> dict[str, object] | None:
    """GET ``url`` and parse its JSON body; None when the node does not answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        body = json.loads(conn.getresponse().read())
        return body if isinstance(body, dict) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for_leader(urls: list[str], timeout: float = 30.0) -> str:
    """The leader's URL once every node in ``urls`` that answers agrees there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [get_json(url + "/status") for url in urls]
        leaders = {str(leader["url"]) for s in statuses if s and isinstance(leader := s.get("leader"), dict)}
        if len(leaders) == 1:
            return leaders.pop()
        time.sleep(0.1)
    raise TimeoutError(f"no agreed leader among {urls} after {timeout}s")


@contextlib.contextmanager
def local_cluster(nodes: int = 3, extra_args: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Start ``nodes`` processes on free ports with data in a temporary directory; yield their URLs once a
    leader is elected; stop them all (SIGTERM, then SIGKILL) on exit."""
    ports = dict(zip([f"n{i + 1}" for i in range(nodes)], free_ports(nodes), strict=True))
    urls = [f"http://127.0.0.1:{port}" for port in ports.values()]
    with tempfile.TemporaryDirectory(prefix="raftkv-") as tmp, contextlib.ExitStack() as stack:
        data_dir = Path(tmp)
        procs = []
        for node_id, port in ports.items():
            peers = {p: q for p, q in ports.items() if p != node_id}
            log = stack.enter_context((data_dir / f"{node_id}.log").open("wb"))
            command = [*node_command(node_id, port, peers, data_dir), *extra_args]
            procs.append(subprocess.Popen(command, stdout=log, stderr=log))
        try:
            wait_for_leader(urls)
            yield urls
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
