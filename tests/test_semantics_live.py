"""The client API's promises on a real three-node cluster whose leader is SIGKILLed in the middle.

A keyed write is applied once however it is retried and wherever the retry lands; a watch resumed on another
node from its last revision misses no change and repeats none; a lease kept alive through the failover
outlives its ttl and ends once let go; a long-poll never answers with a change from before the revision it
names. Every request goes straight to the nodes with httpx, as any HTTP client would send it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio

from raftkv.launch import POLL_INTERVAL
from raftkv_harness.cluster import LocalCluster

IDEMPOTENCY: Final = "Idempotency-Key"
REPLAYED: Final = "Idempotent-Replayed"
FAILOVER_DEADLINE: Final = 30.0  # seconds a request may take to find a node that answers, election included
# A follower holds a write it relays to a dead leader for the whole request timeout (5 s): give up sooner.
ATTEMPT_TIMEOUT: Final = 2.0
TEST_DEADLINE: Final = 120.0
STREAM_TIMEOUT: Final = httpx.Timeout(10.0, read=30.0)  # an idle stream sends a comment every 15 seconds


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path, size=3) as c:
        await c.wait_for_leader(timeout=20)
        yield c


# --- talking to the cluster ---------------------------------------------------------------------------------


def serving(cluster: LocalCluster) -> list[str]:
    """The members running and not paused: those a request can get an answer from."""
    return [n for n in cluster.nodes if cluster.node(n).alive and not cluster.node(n).paused]


async def until_answered(
    http: httpx.AsyncClient, cluster: LocalCluster, method: str, path: str, **request: Any
) -> httpx.Response:
    """Send the request to each serving node in turn until one answers other than 503, as a client does
    through a failover: an attempt that is slow to answer is given up and sent to the next node (sending a
    write again, even while the first attempt may still be pending, is safe only with an Idempotency-Key)."""
    with trio.fail_after(FAILOVER_DEADLINE):
        while True:
            for node_id in serving(cluster):
                url = cluster.client_url(node_id) + path
                try:
                    answer = await http.request(method, url, timeout=ATTEMPT_TIMEOUT, **request)
                except httpx.HTTPError:
                    continue
                if answer.status_code != 503:
                    return answer
            await trio.sleep(POLL_INTERVAL)


def base_url(answer: httpx.Response) -> str:
    """The node that gave ``answer``."""
    url = answer.request.url
    return f"{url.scheme}://{url.host}:{url.port}"


async def log_length(cluster: LocalCluster, node_id: str) -> int:
    status = await cluster.status(node_id)
    assert status is not None, f"{node_id} does not answer /status"
    length: int = status["last_log_index"]
    return length


@dataclass(frozen=True)
class KeyedWrite:
    """A write with an Idempotency-Key: sent again, it must get the first answer back, not be applied again."""

    method: str
    path: str
    body: dict[str, Any]
    idempotency_key: str

    def request(self) -> dict[str, Any]:
        return {"json": self.body, "headers": {IDEMPOTENCY: self.idempotency_key}}

    async def send(self, http: httpx.AsyncClient, url: str, **extra: Any) -> httpx.Response:
        return await http.request(self.method, url + self.path, **self.request(), **extra)

    async def retry(self, http: httpx.AsyncClient, cluster: LocalCluster) -> httpx.Response:
        return await until_answered(http, cluster, self.method, self.path, **self.request())


def compare_and_set(key: str, revision: int, value: Any) -> KeyedWrite:
    """A transaction that sets ``key`` only while it is at ``revision``: applied a second time, its compare
    fails, and the failure branch writes a marker under the key, so a double application is visible both in
    the answer (``succeeded: false``) and in the key's watch history."""
    body = {
        "compare": [{"key": key, "revision": revision}],
        "success": [{"put": {"key": key, "value": value}}],
        "failure": [{"put": {"key": f"{key}/compare-failed", "value": True}}],
    }
    return KeyedWrite("POST", "/txn", body, f"set {key} at {revision}")


# --- watching -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A change of a key at a revision: an event of a watch, or what an acknowledged write did."""

    revision: int
    type: str
    key: str
    value: Any

    @classmethod
    def from_json(cls, event: dict[str, Any]) -> Change:
        return cls(event["revision"], event["type"], event["key"], event["value"])


class Changes:
    """Changes in the order they were received; ``wait_until`` wakes at each new one."""

    def __init__(self) -> None:
        self.received: list[Change] = []
        self._grown = trio.Event()

    def add(self, change: Change) -> None:
        self.received.append(change)
        self._grown.set()
        self._grown = trio.Event()

    async def wait_until(self, done: Callable[[list[Change]], bool]) -> None:
        while not done(self.received):
            await self._grown.wait()


async def receive_changes(response: httpx.Response, on_change: Callable[[Change], None]) -> None:
    """Hand each event of a watch stream to ``on_change`` until the stream ends; its id must be its revision."""
    assert response.status_code == 200, (response.status_code, await response.aread())
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            name, _, value = line.partition(": ")  # a comment (": keep-alive") has the empty name
            fields[name] = value
            continue
        assert "event" not in fields, f"the stream ended early: {fields}"
        if "data" in fields:
            change = Change.from_json(json.loads(fields["data"]))
            assert int(fields["id"]) == change.revision, fields
            on_change(change)
        fields = {}


async def changes_after(http: httpx.AsyncClient, url: str, prefix: str, after: int) -> list[Change]:
    """Every change under ``prefix`` after revision ``after`` that ``url`` has applied, from a watch stream
    that ends a second after it opens."""
    changes: list[Change] = []
    params: dict[str, str | int] = {"prefix": prefix, "after_revision": after, "timeout": 1}
    async with http.stream("GET", f"{url}/watch", params=params, timeout=STREAM_TIMEOUT) as response:
        await receive_changes(response, changes.append)
    return changes


async def long_poll(
    http: httpx.AsyncClient, url: str, key: str, after: int, timeout: float
) -> httpx.Response:
    """``key``'s first change after revision ``after``, or a 204 after ``timeout`` seconds without one."""
    params: dict[str, str | float] = {"wait": "true", "after_revision": after, "timeout": timeout}
    return await http.get(f"{url}/kv/{key}", params=params, timeout=timeout + 10)


async def applied_once(http: httpx.AsyncClient, cluster: LocalCluster, key: str, after: int) -> Change:
    """The one change of ``key`` and the keys under it since revision ``after``, which must also be the key's
    state; fails when there is none or more than one."""
    read = await until_answered(http, cluster, "GET", f"/kv/{key}")  # linearizable: the node is caught up
    changes = await changes_after(http, base_url(read), key, after)
    assert len(changes) == 1, f"applied {len(changes)} times: {changes}"
    (change,) = changes
    assert read.status_code == 200, read.text
    assert read.json() == {"key": key, "value": change.value, "revision": change.revision}
    return change


@dataclass
class Writer:
    """Puts keys through whichever node answers, each put with its own Idempotency-Key, so one retried through
    the failover is applied once; ``written`` is every change acknowledged, in order."""

    http: httpx.AsyncClient
    cluster: LocalCluster
    written: list[Change] = field(default_factory=list)

    async def put(self, key: str, value: Any) -> None:
        write = KeyedWrite("PUT", f"/kv/{key}", {"value": value}, f"put {key}={value}")
        answer = await write.retry(self.http, self.cluster)
        assert answer.status_code == 200, answer.text
        self.written.append(Change(answer.json()["revision"], "put", key, value))


# --- exactly once -------------------------------------------------------------------------------------------


async def test_keyed_writes_retried_after_the_leader_dies_are_replayed_not_applied_again(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(TEST_DEADLINE):
        leader = await cluster.wait_for_leader()
        url = cluster.client_url(leader)
        before = (await http.put(f"{url}/kv/account", json={"value": 0})).json()["revision"]
        writes = [
            compare_and_set("account", before, 1),
            KeyedWrite("PUT", "/kv/greeting", {"value": "hello"}, "greet once"),
        ]
        firsts = [await write.send(http, url) for write in writes]
        for first in firsts:
            assert first.status_code == 200 and REPLAYED not in first.headers, first.text
        assert firsts[0].json()["succeeded"]

        await cluster.kill(leader)
        for write, first in zip(writes, firsts, strict=True):
            retry = await write.retry(http, cluster)
            assert (retry.status_code, retry.headers.get(REPLAYED)) == (200, "true"), retry.text
            assert retry.json() == first.json()
        account = await applied_once(http, cluster, "account", before)
        assert (account.revision, account.value) == (firsts[0].json()["revision"], 1)
        greeting = await applied_once(http, cluster, "greeting", before)
        assert firsts[1].json() == {"key": "greeting", "value": "hello", "revision": greeting.revision}


LostAnswer = Callable[[httpx.AsyncClient, LocalCluster, str, KeyedWrite], Awaitable[httpx.Response | None]]


async def kill_once_sent(
    http: httpx.AsyncClient, cluster: LocalCluster, leader: str, write: KeyedWrite
) -> httpx.Response | None:
    """Send ``write`` to the leader and SIGKILL the leader the moment the request's last byte is out."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event == "http11.send_request_body.complete":
            await cluster.kill(leader)

    try:
        return await write.send(http, cluster.client_url(leader), extensions={"trace": trace})
    except httpx.HTTPError:
        return None


async def kill_once_logged(
    http: httpx.AsyncClient, cluster: LocalCluster, leader: str, write: KeyedWrite, *, holder: str
) -> httpx.Response | None:
    """Send ``write`` to the leader and SIGKILL the leader once the log of ``holder`` has the entry."""
    logged = await log_length(cluster, leader)  # every entry up to here is committed: the cluster is quiet
    answer: httpx.Response | None = None
    finished = trio.Event()

    async def send() -> None:
        nonlocal answer
        with contextlib.suppress(httpx.HTTPError):
            answer = await write.send(http, cluster.client_url(leader))
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while True:
            answered = finished.is_set()
            if await log_length(cluster, holder) > logged:
                break
            assert not answered, f"{holder} never logged the write; the leader answered {answer}"
            await trio.sleep(POLL_INTERVAL / 10)
        await cluster.kill(leader)
    return answer


async def kill_once_on_a_majority(
    http: httpx.AsyncClient, cluster: LocalCluster, leader: str, write: KeyedWrite
) -> httpx.Response | None:
    """The entry reaches one follower (the other is paused): leader and follower are a majority, so every
    later leader has it."""
    paused, holder = (n for n in cluster.nodes if n != leader)
    cluster.pause(paused)
    try:
        return await kill_once_logged(http, cluster, leader, write, holder=holder)
    finally:
        cluster.resume(paused)


async def kill_once_only_the_leader_logged_it(
    http: httpx.AsyncClient, cluster: LocalCluster, leader: str, write: KeyedWrite
) -> httpx.Response | None:
    """The leader is cut off from its followers (a paused follower would still read the append waiting in
    its socket once resumed): the entry dies with the leader, which could not have committed it."""
    cluster.mesh.isolate(leader)
    try:
        return await kill_once_logged(http, cluster, leader, write, holder=leader)
    finally:
        cluster.mesh.heal()


@pytest.mark.parametrize(
    ("lose_the_answer", "replayed"),
    [(kill_once_sent, None), (kill_once_on_a_majority, True), (kill_once_only_the_leader_logged_it, False)],
    ids=["killed-once-sent", "entry-on-a-majority", "entry-on-the-leader-only"],
)
async def test_a_keyed_write_whose_answer_died_with_the_leader_is_applied_at_most_once(
    cluster: LocalCluster, http: httpx.AsyncClient, lose_the_answer: LostAnswer, replayed: bool | None
) -> None:
    """``replayed``: whether the retry must find the first attempt applied (None: either may be the case)."""
    with trio.fail_after(TEST_DEADLINE):
        leader = await cluster.wait_for_leader()
        url = cluster.client_url(leader)
        before = (await http.put(f"{url}/kv/account", json={"value": 0})).json()["revision"]
        write = compare_and_set("account", before, 1)
        original = await lose_the_answer(http, cluster, leader, write)
        if replayed is False:
            assert original is None or original.status_code != 200, original.text

        retry = await write.retry(http, cluster)
        assert retry.status_code == 200 and retry.json()["succeeded"], retry.text
        if replayed is not None:
            assert (retry.headers.get(REPLAYED) == "true") is replayed, retry.headers
        if original is not None and original.status_code == 200:
            assert retry.headers.get(REPLAYED) == "true" and retry.json() == original.json()
        again = await write.retry(http, cluster)
        assert (again.status_code, again.headers.get(REPLAYED)) == (200, "true"), again.text
        assert again.json() == retry.json()
        account = await applied_once(http, cluster, "account", before)
        assert (account.revision, account.value) == (retry.json()["revision"], 1)


# --- watches ------------------------------------------------------------------------------------------------


async def watch_resuming(
    http: httpx.AsyncClient,
    cluster: LocalCluster,
    prefix: str,
    after: int,
    first: str,
    changes: Changes,
    used: list[str],
) -> None:
    """Follow the changes under ``prefix`` after revision ``after``: on node ``first``, then, each time the
    stream breaks, on another serving node, resuming with Last-Event-ID set to the last revision received.
    ``used`` lists the nodes streamed from. Runs until cancelled."""
    node_id = first
    while True:
        used.append(node_id)
        params: dict[str, str | int] = {"prefix": prefix}
        headers: dict[str, str] = {}
        if changes.received:
            headers["Last-Event-ID"] = str(changes.received[-1].revision)
        else:
            params["after_revision"] = after
        url = cluster.client_url(node_id) + "/watch"
        request = http.stream("GET", url, params=params, headers=headers, timeout=STREAM_TIMEOUT)
        try:
            async with request as response:
                await receive_changes(response, changes.add)
        except httpx.HTTPError:
            pass
        while not (others := [n for n in serving(cluster) if n != node_id]):
            await trio.sleep(POLL_INTERVAL)
        node_id = others[0]


async def put_numbered(writer: Writer, prefix: str, numbers: range) -> None:
    for number in numbers:
        await writer.put(f"{prefix}{number:03}", number)


async def test_a_watch_resumed_on_another_node_after_the_leader_dies_misses_and_repeats_nothing(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    prefix, count = "watched/", 60
    with trio.fail_after(TEST_DEADLINE):
        leader = await cluster.wait_for_leader()
        listing = await http.get(f"{cluster.client_url(leader)}/kv", params={"prefix": prefix})
        start = listing.json()["revision"]
        writer, changes, used = Writer(http, cluster), Changes(), list[str]()
        async with trio.open_nursery() as watching:
            watching.start_soon(watch_resuming, http, cluster, prefix, start, leader, changes, used)
            await put_numbered(writer, prefix, range(count // 3))
            async with trio.open_nursery() as writing:
                writing.start_soon(put_numbered, writer, prefix, range(count // 3, count))
                await changes.wait_until(lambda received: len(received) > count // 3)  # writing goes on
                await cluster.kill(leader)
            last = writer.written[-1].revision
            await changes.wait_until(lambda received: received[-1].revision >= last)
            watching.cancel_scope.cancel()
        assert used[0] == leader and len(used) > 1, used
        assert changes.received == writer.written
        revisions = [change.revision for change in changes.received]
        assert revisions == sorted(set(revisions))


async def test_a_long_poll_never_answers_with_a_change_from_before_its_revision(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    """Each node is long-polled after the newest revision known (its own last answer, or the writer's last
    acknowledgement, which a lagging or restarted node may not have applied yet), across the leader's death
    and its return."""
    key = "clock"
    with trio.fail_after(TEST_DEADLINE):
        leader = await cluster.wait_for_leader()
        writer = Writer(http, cluster)
        await writer.put(key, 0)
        answered = {node_id: Changes() for node_id in cluster.nodes}

        async def poll(node_id: str) -> None:
            seen = writer.written[-1].revision
            while True:
                after = max(seen, writer.written[-1].revision)
                try:
                    answer = await long_poll(http, cluster.client_url(node_id), key, after, timeout=1)
                except httpx.HTTPError:  # down, or going down
                    await trio.sleep(POLL_INTERVAL)
                    continue
                assert answer.status_code in (200, 204), answer.text
                if answer.status_code == 200:
                    change = Change.from_json(answer.json())
                    assert change.revision > after, f"{node_id}: after revision {after} came {change}"
                    answered[node_id].add(change)
                    seen = change.revision

        async def ticks(stop: trio.Event) -> None:
            for value in itertools.count(1):
                if stop.is_set():
                    return
                await writer.put(key, value)

        def more_than(count: int) -> Callable[[list[Change]], bool]:
            return lambda received: len(received) > count

        async with trio.open_nursery() as polling:
            for node_id in cluster.nodes:
                polling.start_soon(poll, node_id)
            stop = trio.Event()
            async with trio.open_nursery() as writing:
                writing.start_soon(ticks, stop)
                for changes in answered.values():
                    await changes.wait_until(more_than(3))
                await cluster.kill(leader)
                await cluster.wait_for_leader(other_than=leader)
                await cluster.restart(leader)
                for changes in answered.values():  # the restarted node included
                    await changes.wait_until(more_than(len(changes.received) + 3))
                stop.set()
            polling.cancel_scope.cancel()
        acknowledged = {change.revision: change for change in writer.written}
        for node_id, changes in answered.items():
            assert all(acknowledged[change.revision] == change for change in changes.received), node_id


async def keep_alive(http: httpx.AsyncClient, cluster: LocalCluster, lease: int, period: float) -> None:
    """Keep ``lease`` alive every ``period`` seconds through whichever node answers, until cancelled."""
    while True:
        answer = await until_answered(http, cluster, "POST", f"/leases/{lease}/keepalive")
        assert answer.status_code == 200, answer.text
        await trio.sleep(period)


async def test_a_lease_kept_alive_through_the_failover_outlives_its_ttl_and_ends_once_let_go(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    """Beside it a lease of the same ttl that nobody keeps alive shows the new leader does revoke leases."""
    ttl = 3
    with trio.fail_after(TEST_DEADLINE):
        leader = await cluster.wait_for_leader()
        url = cluster.client_url(leader)
        revisions: dict[str, int] = {}
        leases: dict[str, int] = {}
        for key in ("kept", "let-go"):
            leases[key] = (await http.post(f"{url}/leases", json={"ttl": ttl})).json()["id"]
            put = await http.put(f"{url}/kv/{key}", json={"value": key, "lease": leases[key]})
            revisions[key] = put.json()["revision"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive, http, cluster, leases["kept"], ttl / 3)
            await cluster.kill(leader)
            survivor = cluster.client_url(serving(cluster)[0])
            quiet = await long_poll(http, survivor, "kept", revisions["kept"], timeout=2 * ttl)
            assert quiet.status_code == 204, f"changed within 2 ttl of the kill: {quiet.text}"
            ended = await long_poll(http, survivor, "let-go", revisions["let-go"], timeout=ttl + 20)
            assert ended.status_code == 200 and ended.json()["type"] == "delete", ended.text
            kept = await until_answered(http, cluster, "GET", "/kv/kept")
            assert kept.status_code == 200 and kept.json()["revision"] == revisions["kept"], kept.text
            nursery.cancel_scope.cancel()
        ended = await long_poll(http, survivor, "kept", revisions["kept"], timeout=ttl + 20)
        assert ended.status_code == 200 and ended.json()["type"] == "delete", ended.text
        for lease in leases.values():
            gone = await until_answered(http, cluster, "GET", f"/leases/{lease}")
            assert gone.status_code == 404, gone.text


async def test_a_keep_alive_reaching_a_new_leader_before_it_applied_the_grant_finds_the_lease(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    """The grant commits, but the leader dies before the followers learn so (its links to them are slow, and
    cut as its answer arrives); the survivors' link is slow too, so the new leader's first entry, which
    commits the grant on it, takes a while. A keep-alive in between must not be told the lease is gone."""
    with trio.fail_after(TEST_DEADLINE):
        leader = await cluster.wait_for_leader()
        survivors = [n for n in cluster.nodes if n != leader]
        cluster.mesh.set_delay(0.2, links=[(leader, n) for n in survivors])

        async def cut_off_once_answered(event: str, info: dict[str, Any]) -> None:
            if event == "http11.receive_response_headers.complete":
                cluster.mesh.isolate(leader)

        url = cluster.client_url(leader)
        grant = await http.post(
            f"{url}/leases", json={"ttl": 30}, extensions={"trace": cut_off_once_answered}
        )
        assert grant.status_code == 200, grant.text
        lease = grant.json()["id"]
        await cluster.kill(leader)
        cluster.mesh.heal()
        cluster.mesh.set_delay(0.15, links=[(a, b) for a in survivors for b in survivors if a != b])
        for node_id in survivors:
            held = await http.get(f"{cluster.client_url(node_id)}/leases", params={"consistency": "stale"})
            if held.json()["leases"]:
                pytest.fail(f"{node_id} applied the grant before the kill: the window is missed")

        kept = await until_answered(http, cluster, "POST", f"/leases/{lease}/keepalive")
        assert kept.status_code == 200, kept.text
        found = await until_answered(http, cluster, "GET", f"/leases/{lease}")
        assert found.status_code == 200, found.text
