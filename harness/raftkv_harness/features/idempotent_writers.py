"""Writers that retry every write with its Idempotency-Key until a node answers, so each write must take effect
exactly once. Every value is unique ("w1-17"), so the watch history names each write that took effect."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import httpx
import trio

from raftkv_harness.checks.exactly_once import IdempotentWrite
from raftkv_harness.features.retrying import send_until_answered

PREFIX = "x/once/"
KEYS = 3
GIVE_UP_AFTER = 20.0  # seconds of retries before a write is recorded unanswered
PACE = 0.05  # seconds between a writer's writes, so the watch history (10,000 events) spans more of a run


class IdempotentWriters:
    def __init__(self, urls: Sequence[str], *, writers: int, seed: int, timeout: float) -> None:
        self.urls = list(urls)
        self.writers = writers
        self.seed = seed
        self.timeout = timeout
        self.writes: list[IdempotentWrite] = []

    @property
    def retried(self) -> int:
        return sum(1 for write in self.writes if write.attempts > 1)

    async def run(self, stop: trio.Event) -> None:
        """Every writer until ``stop``; a write in flight goes on being retried until answered (or given up)."""
        async with trio.open_nursery() as nursery:
            for index in range(self.writers):
                nursery.start_soon(self._writer, index, stop)

    async def _writer(self, index: int, stop: trio.Event) -> None:
        rng = random.Random(f"{self.seed}:writer{index}")
        async with httpx.AsyncClient(trust_env=False) as client:
            for serial in itertools.count():
                if stop.is_set():
                    return
                key, value = f"{PREFIX}{rng.randrange(KEYS)}", f"w{index}-{serial}"
                answer = await send_until_answered(
                    client,
                    self.urls,
                    rng,
                    "PUT",
                    f"/kv/{key}",
                    json={"value": value},
                    idempotency_key=f"chaos-{self.seed}-{value}",
                    timeout=self.timeout,
                    give_up_after=GIVE_UP_AFTER,
                )
                revision = answer.body()["revision"] if answer.status == 200 else None
                self.writes.append(IdempotentWrite(key, value, answer.attempts, answer.status, revision))
                await trio.sleep(PACE)
