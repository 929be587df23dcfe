"""Starting nodes as processes and waiting for them to agree on a leader: ``raftkv cluster``, the benchmark and
the test harness all go through these two functions, so a new setting reaches every launcher at once."""

from __future__ import annotations

import secrets
import ssl
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import trio

RAFTKV: Final = (sys.executable, "-m", "raftkv")
POLL_INTERVAL: Final = 0.1  # /status of every node, this often, until a leader is agreed
STATUS_TIMEOUT: Final = 1.0

Statuses = list[dict[str, Any] | None]
"""What each node's ``/status`` said, in the order of its URL (None: no answer)."""


def node_command(
    node_id: str,
    listen: str,
    data_dir: Path,
    peers: Mapping[str, str] = {},
    *,
    options: Sequence[str] = (),
    launcher: Sequence[str] = RAFTKV,
) -> list[str]:
    """The command line of ``raftkv serve`` for one node; ``launcher`` runs it (a test harness may wrap it)."""
    command = [*launcher, "serve", "--id", node_id, "--listen", listen, "--data-dir", str(data_dir)]
    for peer, url in peers.items():
        command += ["--peer", f"{peer}={url}"]
    return [*command, *options]


def cluster_token_file(data_dir: Path) -> Path:
    """The cluster token of a local cluster, made once per data directory (readable by its owner only)."""
    path = data_dir / "token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path


class NoLeader(Exception):
    """No leader was agreed in time; the message has what each node said last."""


async def wait_for_leader(
    urls: Sequence[str],
    timeout: float = 30.0,
    *,
    other_than: str | None = None,
    tls: ssl.SSLContext | None = None,
    on_poll: Callable[[Statuses], None] = lambda statuses: None,
) -> tuple[str, str]:
    """(id, url) of the leader that a majority of ``urls`` names for the same term (one that is not
    ``other_than``, say after killing it), polling their ``/status`` (``on_poll`` is shown each round);
    NoLeader after ``timeout``."""
    statuses: Statuses = []
    async with httpx.AsyncClient(timeout=STATUS_TIMEOUT, verify=tls or True, trust_env=False) as client:
        with trio.move_on_after(timeout):
            while True:
                statuses = [await _status(client, url) for url in urls]
                on_poll(statuses)
                leader = agreed_leader(statuses, len(urls))
                if leader is not None and leader[0] != other_than:
                    return leader
                await trio.sleep(POLL_INTERVAL)
    raise NoLeader(f"no leader agreed by a majority of {list(urls)} within {timeout}s: {statuses}")


def agreed_leader(statuses: Iterable[Mapping[str, Any] | None], members: int) -> tuple[str, str] | None:
    """(id, url) of the leader that more than half of ``members`` name for the same term in their
    ``/status`` (None stands for a node that did not answer), if there is one. Nodes may reach the leader at
    different URLs (through proxies, say): the URL is the one the leader gives itself, when it answered."""
    answered = [s for s in statuses if s is not None]
    votes = Counter((s["leader"]["id"], s["term"]) for s in answered if s.get("leader"))
    for (leader_id, term), count in votes.most_common(1):
        if count > members // 2:
            naming = [s for s in answered if s.get("leader") and s["leader"]["id"] == leader_id]
            own = [s["leader"]["url"] for s in naming if s["id"] == leader_id and s["term"] == term]
            return leader_id, (own or [s["leader"]["url"] for s in naming])[0]
    return None


async def _status(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    try:
        response = await client.get(url + "/status")
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if response.status_code == 200 and isinstance(body, dict) else None
