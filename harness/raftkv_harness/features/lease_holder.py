"""A lease holder and a prober: the holder grants a lease, puts a key on it and keeps it alive every third of
its ttl, each time at a node drawn afresh, recording when every acknowledged grant and keep-alive was
sent and answered; when the lease is gone (a keep-alive answered 404) it starts a new one on a new key. The prober
reads the newest key with linearizable reads all along. ``checks.lease_safety`` judges the two records.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

import httpx
import trio

from raftkv_harness.checks.lease_safety import LeaseLife, Probe, Renewal
from raftkv_harness.features.retrying import send, send_until_answered

PREFIX = "x/lease/"
TTL = 3
GIVE_UP_AFTER = 20.0
PROBE_INTERVAL = 0.2


class LeaseHolder:
    def __init__(self, urls: Sequence[str], *, seed: int, timeout: float, now: Callable[[], float]) -> None:
        self.urls = list(urls)
        self.seed = seed
        self.timeout = timeout
        self.now = now
        self.lives: list[LeaseLife] = []
        self.probes: list[Probe] = []
        self.keep_alives_sent = 0

    async def run(self, stop: trio.Event) -> None:
        """Hold leases and probe their keys until ``stop``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._prober, stop)
            await self._hold(stop)

    async def _hold(self, stop: trio.Event) -> None:
        rng = random.Random(f"{self.seed}:lease-holder")
        async with httpx.AsyncClient(trust_env=False) as client:
            for generation in itertools.count():
                if stop.is_set():
                    return
                established = await self._establish(client, rng, generation)
                if established is not None:
                    await self._keep_alive(client, rng, *established, stop)

    async def _establish(
        self, client: httpx.AsyncClient, rng: random.Random, generation: int
    ) -> tuple[int, LeaseLife] | None:
        """Grant a lease and put its key on it: the lease id and its record, or None without a definite
        success. The grant's first send time is its renewal: the countdown starts later, when it is applied."""
        sent = self.now()
        grant = await send_until_answered(
            client,
            self.urls,
            rng,
            "POST",
            "/leases",
            json={"ttl": TTL},
            idempotency_key=f"chaos-{self.seed}-lease-{generation}",
            timeout=self.timeout,
            give_up_after=GIVE_UP_AFTER,
        )
        if grant.status != 200:
            return None
        grant_acknowledged = self.now()
        lease, key = grant.body()["id"], f"{PREFIX}{generation}"
        put = await send_until_answered(
            client,
            self.urls,
            rng,
            "PUT",
            f"/kv/{key}",
            json={"value": lease, "lease": lease},
            idempotency_key=f"chaos-{self.seed}-lease-key-{generation}",
            timeout=self.timeout,
            give_up_after=GIVE_UP_AFTER,
        )
        if put.status != 200:
            return None
        life = LeaseLife(
            key, float(TTL), established=self.now(), renewals=[Renewal(sent, grant_acknowledged)]
        )
        self.lives.append(life)
        return lease, life

    async def _keep_alive(
        self, client: httpx.AsyncClient, rng: random.Random, lease: int, life: LeaseLife, stop: trio.Event
    ) -> None:
        """One keep-alive every ttl/3 until ``stop`` or until the lease is gone."""
        while not stop.is_set():
            await trio.sleep(TTL / 3)
            sent = self.now()
            self.keep_alives_sent += 1
            response = await send(
                client, self.urls, rng, "POST", f"/leases/{lease}/keepalive", timeout=self.timeout
            )
            if response is not None and response.status_code == 200:
                life.renewals.append(Renewal(sent, self.now()))
            elif response is not None and response.status_code == 404:
                life.gone_at = self.now()
                return

    async def _prober(self, stop: trio.Event) -> None:
        rng = random.Random(f"{self.seed}:lease-prober")
        async with httpx.AsyncClient(trust_env=False) as client:
            while not stop.is_set():
                await trio.sleep(PROBE_INTERVAL)
                if not self.lives:
                    continue
                key, call = self.lives[-1].key, self.now()
                response = await send(client, self.urls, rng, "GET", f"/kv/{key}", timeout=self.timeout)
                if response is not None and response.status_code in (200, 404):
                    self.probes.append(Probe(key, call, self.now(), present=response.status_code == 200))
