"""The chaos suite's clients: concurrent reads, unique-valued writes and compare-and-sets on a few keys, recorded
as a history the linearizability checker can judge, plus the accounting a run reports (lost acknowledged
writes, throughput, time to serve again).

Why this shape: each client is one Trio task with its own HTTP connection pool that sends one request at a
time to a random node, directly (clients bypass the fault proxies, as clients beside a node would), so faults
between nodes turn into slow, refused or unknown answers rather than client-side artefacts. Every request has a
short deadline: a fault yields an UNKNOWN outcome, never a hang. Every written value is unique ("p3-17"), so a
value read later names the one operation that wrote it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from raftkv_harness.linearizability import Op, OpKind, Outcome

FINAL_READ_TIMEOUT = 60.0
BACKOFF_AFTER_TROUBLE = 0.1  # a client that got no definite answer pauses, so a dead node is not hammered


@dataclass(frozen=True)
class WorkloadConfig:
    clients: int = 8
    keys: int = 6
    request_timeout: float = 1.5
    read_share: float = 0.5
    write_share: float = 0.25  # the rest are compare-and-sets
    redirect_share: float = (
        0.5  # requests sent with ?redirect=true (the 307 is followed) instead of forwarded
    )


def key_names(count: int) -> list[str]:
    return [f"chaos-{i}" for i in range(count)]


def classify(kind: OpKind, status: int | None, *, sent: bool = True) -> Outcome | None:
    """What an answer tells the checker; None when the operation must be left out of the history.

    ``status`` is None when no answer came (timeout, reset): the request may have taken effect, so UNKNOWN, and
    so is a 503 or anything unexpected (a write that timed out at the leader may still commit). A 412 is a
    definite FAIL of a compare-and-set: the checker reads it as "the value differed from the expected one".
    Left out are requests that never reached a node (``sent=False``: connection refused) and 400s: they say
    nothing about the register, and recording a refused cas as FAIL would assert something never observed.
    """
    if not sent or status == 400:
        return None
    if status == 200 or (status == 404 and kind == "read"):
        return Outcome.OK
    if status == 412 and kind == "cas":
        return Outcome.FAIL
    return Outcome.UNKNOWN


@dataclass
class OutcomeCounts:
    ok: int = 0
    fail: int = 0
    unknown: int = 0
    left_out: int = 0

    def add(self, outcome: Outcome | None) -> None:
        if outcome is None:
            self.left_out += 1
        else:
            setattr(self, outcome.value, getattr(self, outcome.value) + 1)

    @property
    def total(self) -> int:
        return self.ok + self.fail + self.unknown + self.left_out


@dataclass(frozen=True)
class _Request:
    kind: OpKind
    key: str
    value: Any = None
    expected: Any = None


@dataclass(frozen=True)
class _Answer:
    status: int | None
    sent: bool
    value: Any = None


class Workload:
    """Concurrent clients against ``urls`` until stopped; ``history`` holds every operation recorded so far,
    timed on ``trio.current_time() - origin`` (the nemesis's clock)."""

    def __init__(self, urls: Sequence[str], config: WorkloadConfig, *, seed: int, origin: float) -> None:
        self.urls = list(urls)
        self.config = config
        self.seed = seed
        self.origin = origin
        self.keys = key_names(config.keys)
        self.history: list[Op] = []
        self.counts = OutcomeCounts()
        self._last_seen: dict[
            str, Any
        ] = {}  # per key, a value some client saw lately: the next cas expects it

    def now(self) -> float:
        return trio.current_time() - self.origin

    async def run(self, stop: trio.Event) -> None:
        """Run every client until ``stop`` is set; each finishes the request it has in flight (bounded by the
        request timeout), so every operation is recorded with the answer it got."""
        async with trio.open_nursery() as nursery:
            for index in range(self.config.clients):
                nursery.start_soon(self._client, index, stop)

    async def final_reads(self, timeout: float = FINAL_READ_TIMEOUT) -> dict[str, Op]:
        """A linearizable read of every key, retried across nodes until one succeeds; recorded in the history
        under one more process than the clients'. Raises trio.TooSlowError if a key stays unreadable."""
        process = self.config.clients
        reads: dict[str, Op] = {}
        with trio.fail_after(timeout):
            async with self._open_client() as client:
                for key in self.keys:
                    attempt = 0
                    while key not in reads:
                        url = self.urls[attempt % len(self.urls)]
                        op = await self._perform(client, process, url, _Request("read", key), redirect=False)
                        if op is not None and op.outcome is Outcome.OK:
                            reads[key] = op
                        else:
                            await trio.sleep(BACKOFF_AFTER_TROUBLE)
                        attempt += 1
        return reads

    def _open_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(trust_env=False, timeout=self.config.request_timeout, follow_redirects=True)

    async def _client(self, index: int, stop: trio.Event) -> None:
        rng = random.Random(f"{self.seed}:client{index}")
        async with self._open_client() as client:
            for serial in itertools.count():
                if stop.is_set():
                    return
                request = self._draw(rng, f"p{index}-{serial}")
                redirect = rng.random() < self.config.redirect_share
                op = await self._perform(client, index, rng.choice(self.urls), request, redirect=redirect)
                if op is None or op.outcome is Outcome.UNKNOWN:
                    await trio.sleep(BACKOFF_AFTER_TROUBLE)

    def _draw(self, rng: random.Random, unique_value: str) -> _Request:
        key = rng.choice(self.keys)
        draw = rng.random()
        if draw < self.config.read_share:
            return _Request("read", key)
        if draw < self.config.read_share + self.config.write_share or key not in self._last_seen:
            return _Request("write", key, unique_value)
        return _Request("cas", key, unique_value, self._last_seen[key])

    async def _perform(
        self, client: httpx.AsyncClient, process: int, url: str, request: _Request, *, redirect: bool
    ) -> Op | None:
        """Send one request, record it, and return the recorded operation (None if it was left out)."""
        call = self.now()
        answer = _Answer(status=None, sent=True)
        with trio.move_on_after(self.config.request_timeout):
            answer = await _send(client, url, request, redirect)
        ret = self.now() if answer.status is not None else None
        outcome = classify(request.kind, answer.status, sent=answer.sent)
        self.counts.add(outcome)
        if outcome is None:
            return None
        value = answer.value if request.kind == "read" else request.value
        op = Op(
            process=process,
            kind=request.kind,
            key=request.key,
            value=value,
            expected=request.expected,
            call=call,
            ret=ret,
            outcome=outcome,
        )
        self.history.append(op)
        if outcome is Outcome.OK and value is not None:
            self._last_seen[request.key] = value
        return op


async def _send(client: httpx.AsyncClient, url: str, request: _Request, redirect: bool) -> _Answer:
    target = f"{url}/kv/{request.key}"
    params = {"redirect": "true"} if redirect else {}
    try:
        if request.kind == "read":
            response = await client.get(target, params=params)
        else:
            body = {"value": request.value}
            if request.kind == "cas":
                body["prev_value"] = request.expected
            response = await client.put(target, params=params, json=body)
    except httpx.ConnectError:
        return _Answer(status=None, sent=False)
    except httpx.HTTPError:
        return _Answer(status=None, sent=True)
    if request.kind == "read" and response.status_code == 200:
        try:
            return _Answer(response.status_code, True, response.json()["value"])
        except (ValueError, KeyError, TypeError):
            return _Answer(status=None, sent=True)
    return _Answer(response.status_code, True)


def lost_acknowledged_writes(history: Sequence[Op], final_reads: Mapping[str, Op]) -> list[Op]:
    """The acknowledged writes that the final read of their key proves lost.

    Sound by construction: an OK write (or successful cas) W is counted only when the final read R of its key
    started after W returned, and R saw a value whose writer X had *returned OK before W was called* (or R saw
    the key absent, the initial state, and nothing here deletes). Then X precedes W precedes R in every
    linearization, so R must have seen W's value or a later one, never X's: W was lost. Values are unique, so a
    value names its writer. When R's value comes from an operation whose outcome is unknown, or from nowhere,
    this count claims nothing (the linearizability check still judges it).
    """
    lost: list[Op] = []
    for key, final in final_reads.items():
        writes = [
            op for op in history if op.key == key and op.kind != "read" and op.outcome is not Outcome.FAIL
        ]
        if final.value is None:
            source_ret = -math.inf
        else:
            source = next((op for op in writes if op.value == final.value), None)
            if source is None or source.outcome is not Outcome.OK or source.ret is None:
                continue
            source_ret = source.ret
        lost += [
            op
            for op in writes
            if op.outcome is Outcome.OK
            and op.ret is not None
            and op.ret < final.call
            and op.call > source_ret
            and op.value != final.value
        ]
    return lost


def completion_time(op: Op, timeout: float) -> float:
    """When the client stopped waiting: its answer, or its deadline when none came."""
    return op.ret if op.ret is not None else op.call + timeout


def ok_ops_between(history: Sequence[Op], start: float, end: float) -> int:
    return sum(
        1 for op in history if op.outcome is Outcome.OK and op.ret is not None and start <= op.ret < end
    )


def per_second(history: Sequence[Op], timeout: float) -> list[OutcomeCounts]:
    """Outcomes per one-second bucket of completion time, from 0 to the last completion."""
    if not history:
        return []
    buckets = [OutcomeCounts() for _ in range(int(max(completion_time(op, timeout) for op in history)) + 1)]
    for op in history:
        buckets[max(0, int(completion_time(op, timeout)))].add(op.outcome)
    return buckets


def time_to_serve_again(history: Sequence[Op], heal: float) -> float | None:
    """Seconds from ``heal`` until an acknowledged write returned, or None if none did."""
    returns = [
        op.ret
        for op in history
        if op.kind != "read" and op.outcome is Outcome.OK and op.ret is not None and op.ret >= heal
    ]
    return min(returns) - heal if returns else None
