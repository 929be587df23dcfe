"""The Trio client against real clusters: a watch that outlives the member it streams from, a lease kept
alive while a block runs, the election recipe, and ``raftkv watch`` ended by Ctrl-C."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from raftkv.client import AsyncClient, Client, Txn
from raftkv.client.election import leadership, observe
from raftkv_harness.cluster import LocalCluster

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Change = tuple[str, str, int]  # type, key, revision


async def write_changes(
    kv: AsyncClient, prefix: str, count: int, started: trio.Event | None = None
) -> list[Change]:
    """``count`` writes under ``prefix``, every third a transaction that puts a key and deletes the one
    before it; the changes made."""
    made: list[Change] = []
    for i in range(count):
        key = f"{prefix}{i}"
        if i % 3 == 2:
            outcome = await kv.txn(Txn().then_put(key, i).then_delete(f"{prefix}{i - 1}"))
            made += [("put", key, outcome.revision), ("delete", f"{prefix}{i - 1}", outcome.revision)]
        else:
            made.append(("put", key, (await kv.put(key, i))["revision"]))
        if started is not None:
            started.set()
    return made


async def received(changes: AsyncGenerator[dict[str, Any], None], count: int) -> list[Change]:
    """The next ``count`` changes a watch yields."""
    return [(c["type"], c["key"], c["revision"]) for c in [await anext(changes) for _ in range(count)]]


async def write_while_killing(cluster: LocalCluster, writer: AsyncClient, node: str) -> list[Change]:
    """Kill ``node`` right after the first of 30 more writes; the changes made."""
    made: list[Change] = []
    writing = trio.Event()

    async def write() -> None:
        made.extend(await write_changes(writer, "w/x", 30, writing))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await writing.wait()
        await cluster.kill(node)
    return made


@contextlib.asynccontextmanager
async def watched_from_a_follower(tmp_path: Path) -> AsyncIterator[tuple[LocalCluster, str, AsyncClient]]:
    """A cluster, a follower's URL (first of all members' for a watcher) and a client writing to the leader."""
    with trio.fail_after(120):
        async with LocalCluster(tmp_path, size=3) as cluster:
            leader = await cluster.wait_for_leader(timeout=30)
            follower = next(node for node in cluster.nodes if node != leader)
            async with AsyncClient([cluster.client_url(leader)]) as writer:
                yield cluster, follower, writer


def members_from(cluster: LocalCluster, first: str) -> list[str]:
    return [cluster.client_url(node) for node in sorted(cluster.nodes, key=lambda node: node != first)]


async def test_a_watch_resumes_on_another_member_when_its_member_is_killed(tmp_path: Path) -> None:
    async with (
        watched_from_a_follower(tmp_path) as (cluster, follower, writer),
        AsyncClient(members_from(cluster, follower)) as watcher,
    ):
        start = (await writer.put("w/start", 0))["revision"]
        async with contextlib.aclosing(watcher.watch("w/", after_revision=start)) as changes:
            before = await write_changes(writer, "w/", 12)
            assert await received(changes, len(before)) == before
            assert watcher.endpoints.urls[0] == cluster.client_url(follower)  # it streams from there
            after = await write_while_killing(cluster, writer, follower)
            assert await received(changes, len(after)) == after  # each once, in order
            assert watcher.endpoints.urls[0] != cluster.client_url(follower)


async def test_a_sync_watch_resumes_on_another_member_too(tmp_path: Path) -> None:
    async with watched_from_a_follower(tmp_path) as (cluster, follower, writer):
        with Client(members_from(cluster, follower)) as watcher:
            start = (await writer.put("w/start", 0))["revision"]
            changes = watcher.watch("w/", after_revision=start)

            async def next_changes(count: int) -> list[Change]:
                def take() -> list[Change]:
                    return [(c["type"], c["key"], c["revision"]) for c in itertools.islice(changes, count)]

                return await trio.to_thread.run_sync(take, abandon_on_cancel=True)

            before = await write_changes(writer, "w/", 12)
            assert await next_changes(len(before)) == before
            assert watcher.endpoints.urls[0] == cluster.client_url(follower)
            after = await write_while_killing(cluster, writer, follower)
            assert await next_changes(len(after)) == after
            assert watcher.endpoints.urls[0] != cluster.client_url(follower)
            changes.close()


async def test_a_lease_kept_alive_keeps_its_keys_until_the_block_ends(cluster_urls: list[str]) -> None:
    with trio.fail_after(60):
        async with AsyncClient(cluster_urls) as kv:
            lease = (await kv.grant_lease(2))["id"]
            revision = (await kv.put("kept/k", 1, lease=lease))["revision"]
            async with kv.keep_alive(lease):
                await trio.sleep(6)  # three times the ttl: only the keep-alive saves the key
                assert await kv.get("kept/k") is not None
            change = await kv.wait("kept/k", after_revision=revision)  # the lease expires 2 s later
            assert change is not None and change["type"] == "delete"


async def test_an_election_has_one_leader_at_a_time_and_a_new_one_when_it_resigns(
    cluster_urls: list[str],
) -> None:
    names = ["a", "b", "c"]
    resign = {name: trio.Event() for name in names}
    leading: list[str] = []  # who is in its block now
    elected_send, elected = trio.open_memory_channel[str](len(names))

    async def candidate(kv: AsyncClient, name: str) -> None:
        async with leadership(kv, "election/leader", name, ttl=5):
            assert not leading, f"{name} leads while {leading} does"
            leading.append(name)
            await elected_send.send(name)
            await resign[name].wait()
            leading.remove(name)

    async def next_leader(leaders: AsyncGenerator[str | None, None]) -> str | None:
        while (leader := await anext(leaders)) is None:
            pass
        return leader

    with trio.fail_after(90):
        async with (
            AsyncClient(cluster_urls) as kv,
            trio.open_nursery() as nursery,
            contextlib.aclosing(observe(kv, "election/leader")) as leaders,
        ):
            for name in names:
                nursery.start_soon(candidate, kv, name)
            order = []
            for _ in names:
                leader = await elected.receive()
                assert leading == [leader]
                assert await next_leader(leaders) == leader  # what the others watch
                order.append(leader)
                resign[leader].set()
            assert sorted(order) == names
            assert await anext(leaders) is None  # the last one resigned: no leader


async def test_the_watch_command_prints_json_lines_until_ctrl_c(cluster_urls: list[str]) -> None:
    with trio.fail_after(60):
        async with AsyncClient(cluster_urls) as kv:
            start = (await kv.put("cliwatch/a", 1))["revision"]
            command = [
                sys.executable,
                "-m",
                "raftkv",
                "watch",
                "cliwatch/",
                "--after-revision",
                str(start - 1),
            ]
            process = await trio.lowlevel.open_process(
                [*command, "--endpoints", ",".join(cluster_urls)], stdout=subprocess.PIPE
            )
            try:
                assert process.stdout is not None
                lines = LineReader(process.stdout)
                assert (
                    await lines.next()
                    == f'{{"type": "put", "key": "cliwatch/a", "value": 1, "revision": {start}}}'
                )
                revision = (await kv.delete("cliwatch/a") or {})["revision"]
                assert await lines.next() == (
                    f'{{"type": "delete", "key": "cliwatch/a", "value": null, "revision": {revision}}}'
                )
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
            finally:
                process.kill()
                await process.wait()


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            piece = await self.stream.receive_some()
            assert piece, "the command ended"
            self.buffer += piece
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()
